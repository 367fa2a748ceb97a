"""Loses nothing: uploads and downloads while upstream connections break at random.

A real relay process in front of moto, through a TCP tap that resets a
random share of upstream connections after a random number of bytes, one
way or the other -- mid-request-head, mid-upload, mid-response, on a pooled
connection between requests.  Several clients PUT objects of assorted sizes
(each signed with its SHA-256, so the S3 server checks the body too) and GET
them back at once.  Whatever broke, every answer must tell the truth:

* a PUT answered 200 stored exactly its bytes; any other PUT stored its
  bytes exactly or nothing (a response lost on the way back) -- never part;
* a GET either delivers exactly the stored bytes or fails visibly (an S3
  error or a connection cut short of Content-Length) -- never a short or
  wrong body that looks complete;
* failures are S3 errors of the upstream kind (5xx), never a signature or
  client error from a badly retried request;

and afterwards the relay serves as before, holding no more descriptors or
connections than it started with.  The same for clients that give up at
random points mid-upload or mid-download (closing, or resetting), among
others who complete: no aborted upload is stored at all.  The fault tests
(test_e2e_faults.py) pin each cut point alone; this mixes them under
concurrency.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import socket
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from tests import harness
from tests.integration.conftest import CLIENT_KEY, relay_config
from tests.integration.test_e2e_faults import put_head, quiet_usage, settle
from tests.rawclient import sign
from tests.tcptap import TcpTap

KiB = 1024
CLIENTS = 4
ROUNDS = 30
#: Sizes and cut points; ``CHAOS_SEED=N pytest tests/integration/test_e2e_chaos.py`` explores others.
SEED = int(os.environ.get("CHAOS_SEED", "20261126"))


@pytest.fixture(scope="module")
def relay(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
          tap: TcpTap) -> Iterator[harness.Relay]:
    port = harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key,
                        f"http://127.0.0.1:{tap.port}")
    relay = harness.start_relay(workdir, text, port)
    yield relay
    harness.stop(relay.process)


@dataclass
class Outcome:
    """What the clients were told, to hold against what the S3 server has."""

    puts: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # key -> (data, status)
    gets: list[tuple[str, int, bytes | None]] = field(default_factory=list)  # key, status, body
    errors: list[str] = field(default_factory=list)  # transport-level failures, described
    lock: threading.Lock = field(default_factory=threading.Lock)


def exchange(url: str, method: str, body: bytes = b"") -> tuple[int, bytes | None]:
    """(status, body), body None when the connection broke before it was all there."""
    payload_hash = hashlib.sha256(body).hexdigest()
    headers = sign(method, url, {"content-length": str(len(body))} if method == "PUT" else {},
                   payload_hash, CLIENT_KEY)
    host, _, rest = url.removeprefix("http://").partition("/")
    connection = http.client.HTTPConnection(host, timeout=60)
    try:
        connection.putrequest(method, "/" + rest, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body or None)
        response = connection.getresponse()
        try:
            return response.status, response.read()
        except (http.client.IncompleteRead, ConnectionError):
            return response.status, None
    finally:
        connection.close()


def client(relay: harness.Relay, bucket: str, n: int, outcome: Outcome) -> None:
    rng = random.Random(SEED + n)
    for r in range(ROUNDS):
        key = f"c{n}/r{r}"
        data = rng.randbytes(rng.choice((0, 1, 100, 64 * KiB, 300 * KiB, 1024 * KiB, 2500 * KiB)))
        url = f"{relay.url}/{bucket}/{key}"
        try:
            status, _ = exchange(url, "PUT", data)
        except (ConnectionError, http.client.HTTPException) as e:
            status = 0
            with outcome.lock:
                outcome.errors.append(f"PUT {key}: {e!r}")
        with outcome.lock:
            outcome.puts[key] = (data, status)
        if status == 200:
            try:
                got, body = exchange(url, "GET")
            except (ConnectionError, http.client.HTTPException) as e:
                got, body = 0, None
                with outcome.lock:
                    outcome.errors.append(f"GET {key}: {e!r}")
            with outcome.lock:
                outcome.gets.append((key, got, body))


def stored(upstream: Any, bucket: str, key: str) -> bytes | None:
    try:
        return bytes(upstream.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as e:
        assert e.response["Error"]["Code"] == "NoSuchKey"
        return None


def test_nothing_lost_or_half_written_while_upstream_connections_break(
    relay: harness.Relay, tap: TcpTap, upstream: Any, bucket: str
) -> None:
    baseline = quiet_usage(relay)
    rng = random.Random(SEED)
    lock = threading.Lock()

    def cut() -> tuple[str, int]:
        """Every upstream connection dies, after 0-4 MiB one way or the other."""
        with lock:
            return rng.choice(("up", "down")), rng.randrange(4096 * KiB)

    tap.chaos = cut
    outcome = Outcome()
    try:
        threads = [threading.Thread(target=client, args=(relay, bucket, n, outcome))
                   for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not any(t.is_alive() for t in threads), "a client hung"
    finally:
        tap.chaos = None

    assert tap.cuts > 0, "no connection was cut: the test tested nothing"
    put_ok = [key for key, (_, status) in outcome.puts.items() if status == 200]
    failed = [key for key, (_, status) in outcome.puts.items() if status != 200]
    broken_gets = [(key, status) for key, status, body in outcome.gets
                   if status != 200 or body is None]
    print(f"{tap.cuts} upstream connections cut; PUTs: {len(put_ok)} answered 200, "
          f"{len(failed)} failed; GETs: {len(outcome.gets)}, {len(broken_gets)} cut short "
          f"(status 0: reset before the status line was read)")
    assert len(outcome.puts) == CLIENTS * ROUNDS
    assert put_ok, "nothing got through: the test tested nothing"

    for key, (data, status) in outcome.puts.items():
        now = stored(upstream, bucket, key)
        if status == 200:
            assert now == data, f"{key}: answered 200, stored {None if now is None else len(now)}"
        else:
            assert status in (0, 500, 502, 503), f"PUT {key}: {status}"
            assert now in (None, data), f"{key}: half-written ({len(now or b'')} of {len(data)})"
    for key, status, body in outcome.gets:
        data = outcome.puts[key][0]
        if status == 200 and body is not None:
            assert body == data, f"GET {key}: a {len(body)}-byte body for {len(data)} bytes"
        else:
            assert status in (0, 200, 500, 502, 503), f"GET {key}: {status}"

    # Each failure's access record says why (an aborted 200 included).
    records = {(r["access"]["method"], r["access"]["key"]): r["access"]
               for r in relay.records() if "access" in r}
    for method, key in [("PUT", key) for key in failed] + [("GET", k) for k, _ in broken_gets]:
        assert records[method, key]["reason"], records[method, key]

    # Still serving, and everything let go.
    assert exchange(f"{relay.url}/{bucket}/after", "PUT", b"after")[0] == 200
    assert exchange(f"{relay.url}/{bucket}/after", "GET") == (200, b"after")
    final = settle(relay, baseline)  # the pool lets its last connections go after 15 s idle
    assert final[0] <= baseline[0], f"{final[0] - baseline[0]} file descriptors leaked"
    assert final[1] <= baseline[1], f"{final[1] - baseline[1]} connections leaked"
    log = relay.output()
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


def give_up(relay: harness.Relay, bucket: str, key: str, data: bytes,
            rng: random.Random) -> tuple[str, bool]:
    """Start a PUT of ``data`` or a GET, and drop the connection part-way: what was
    done, and whether the connection was reset rather than closed."""
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=60)
    try:
        if rng.random() < 0.5:
            sock.sendall(put_head(relay, f"/{bucket}/{key}", len(data)))
            sock.sendall(data[: rng.randrange(len(data))])
            what = "PUT"
        else:
            url = f"{relay.url}/{bucket}/big"
            headers = sign("GET", url, {}, hashlib.sha256(b"").hexdigest(), CLIENT_KEY)
            sock.sendall((f"GET /{bucket}/big HTTP/1.1\r\n"
                          + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                          + "\r\n").encode())
            wanted = rng.randrange(1, 2 * 1024 * KiB)
            while wanted > 0:
                piece = sock.recv(min(wanted, 65536))
                if not piece:
                    break
                wanted -= len(piece)
            what = "GET"
        reset = rng.random() < 0.5
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return what, reset
    finally:
        sock.close()


def test_clients_giving_up_anywhere_store_nothing_and_leak_nothing(
    relay: harness.Relay, upstream: Any, bucket: str
) -> None:
    upstream.put_object(Bucket=bucket, Key="big", Body=random.Random(SEED).randbytes(4096 * KiB))
    baseline = quiet_usage(relay)
    errors: list[str] = []
    abandoned: dict[str, bool] = {}  # key: reset (else closed)
    lock = threading.Lock()

    def quitter(n: int) -> None:
        rng = random.Random(SEED + 100 + n)
        for r in range(ROUNDS):
            key = f"quit{n}-{r}"
            data = rng.randbytes(rng.choice((2, 64 * KiB, 1024 * KiB, 3000 * KiB)))
            what, reset = give_up(relay, bucket, key, data, rng)
            if what == "PUT":
                with lock:
                    abandoned[key] = reset

    def finisher(n: int) -> None:
        rng = random.Random(SEED + 200 + n)
        for r in range(ROUNDS):
            key, data = f"done{n}-{r}", rng.randbytes(rng.randrange(512 * KiB))
            url = f"{relay.url}/{bucket}/{key}"
            if exchange(url, "PUT", data)[0] != 200 or exchange(url, "GET") != (200, data):
                with lock:
                    errors.append(key)

    threads = [threading.Thread(target=quitter, args=(n,)) for n in range(CLIENTS)]
    threads += [threading.Thread(target=finisher, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a client hung"

    assert errors == [], f"clients that finished were failed: {errors}"
    assert abandoned, "no upload was abandoned: the test tested nothing"
    for key in abandoned:
        assert harness.eventually(lambda: stored(upstream, bucket, key) is None, 10), \
            f"{key}: an abandoned upload was stored"
    final = settle(relay, baseline)
    assert final[0] <= baseline[0], f"{final[0] - baseline[0]} file descriptors leaked"
    assert final[1] <= baseline[1], f"{final[1] - baseline[1]} connections leaked"
    records = [r["access"] for r in relay.records() if "access" in r]
    logged = {r["key"]: r for r in records if r["key"] in abandoned}
    for key, reset in abandoned.items():
        # A connection reset right after its bytes were sent can give the
        # relay none of them, only the reset (seen in about 1 run of 4: 0
        # bytes read, then ECONNRESET): no request, nothing to record.  A
        # close delivers every byte first.
        assert reset or key in logged, f"{key}: closed mid-upload, no access record"
    assert all(record["reason"] for record in logged.values()), logged
    log = relay.output()
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]
