"""Limits hold for the whole relay with ``[server] workers = 2``.

``rate``/``burst``, ``max_concurrent_requests`` and ``max_connections`` are
split between the workers (``access.ratelimit.Share``): each enforces its
share, so that the relay as a whole never lets more through than the
configured limit, however the kernel spreads the connections.  Each test
first makes sure that its connections reach both workers (one worker alone
would enforce the whole limit even without the split), then loads them all
at once and counts what got through relay-wide: before the split, each
worker enforced the whole limit and about twice as much got through.
"""

from __future__ import annotations

import http.client
import re
import select
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from s3relay.s3 import sigv4
from tests import harness
from tests.integration.conftest import relay_config
from tests.integration.test_workers import both_listening
from tests.rawclient import sign

RATED = ("AKIDWORKERSRATED0001", "workers-rated-secret/abcdefghijklmnop")
SINGLE = ("AKIDWORKERSCONCUR001", "workers-concurrent-secret/abcdefghijk")
#: The rated client's limits: relay-wide, at most BURST + RATE * t in t seconds.
RATE, BURST = 2.0, 4.0
#: The concurrency-limited client's, relay-wide.
CONCURRENT = 2
#: ``[server] max_connections`` of the second relay, relay-wide.
CONNECTIONS = 4
#: Seconds of load on the rated client.
LOAD_SECONDS = 6.0
#: The request id in a raw response head.
REQUEST_ID = re.compile(rb"(?im)^x-amz-request-id: *([0-9a-f]+)\r?$")
CONTENT_LENGTH = re.compile(rb"(?im)^content-length: *([0-9]+)\r?$")
#: Bursts of connections tried until both workers have enough of them.
ATTEMPTS = 6


def client_section(name: str, key: tuple[str, str], extra: str) -> str:
    return (f"\n[client:{name}]\naccess_key_id = {key[0]}\nsecret_access_key = {key[1]}\n"
            f"credentials = main\n{extra}\n")


class Workers:
    """A relay with ``workers = 2`` and its management site."""

    def __init__(self, relay: harness.Relay, metrics_port: int) -> None:
        self.relay = relay
        self.metrics = f"http://127.0.0.1:{metrics_port}/metrics"

    def sample(self, name: str, labels: str = "") -> float:
        """A sample of the supervisor's /metrics (every worker's, summed)."""
        prefix = f"{name}{{{labels}}} " if labels else f"{name} "
        for line in requests.get(self.metrics, timeout=30).text.splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix):])
        return 0.0

    def worker_of(self, request_ids: list[str]) -> list[int]:
        """The worker that logged each request's access record."""
        by_id: dict[str, int] = {}

        def logged() -> bool:
            by_id.update({r["access"]["request_id"]: r["worker"]
                          for r in self.relay.records() if "access" in r})
            return all(i in by_id for i in request_ids)

        assert harness.eventually(logged), self.relay.output()[-3000:]
        return [by_id[i] for i in request_ids]


def start(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
          server_keys: str, clients: str = "") -> Workers:
    port, metrics_port = harness.free_port(), harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key).replace(
        "[server]\n", f"[server]\nworkers = 2\n{server_keys}", 1
    ) + clients + f"\n[metrics]\nlisten = tcp:{metrics_port}:interface=127.0.0.1\n"
    relay = harness.start_relay(workdir, text, port)
    both_listening(relay)
    workers = Workers(relay, metrics_port)
    # The harness's port probes are closed, and no longer counted, once seen.
    assert harness.eventually(lambda: workers.sample("s3relay_open_connections") == 0)
    return workers


@pytest.fixture(scope="module")
def limited(workdir: Path, s3: harness.S3Server,
            self_key: tuple[str, str]) -> Iterator[Workers]:
    """Two workers; a client with rate/burst, one with max_concurrent_requests."""
    running = start(
        workdir, s3, self_key, "",
        client_section("rated", RATED, f"rate = {RATE}\nburst = {BURST}")
        + client_section("single", SINGLE, f"max_concurrent_requests = {CONCURRENT}"),
    )
    yield running
    harness.stop(running.relay.process)


def spread(workers: Workers, count: int, each: int) -> list[tuple[http.client.HTTPConnection, int]]:
    """``count`` keep-alive connections opened together, each with the worker
    serving it, once a burst gave each worker at least ``each`` of them.

    The kernel decides which worker accepts a connection; a busy machine may
    leave one worker unscheduled for a whole burst, hence a few tries.
    """
    splits = []
    for _ in range(ATTEMPTS):
        connections = [http.client.HTTPConnection("127.0.0.1", workers.relay.port, timeout=30)
                       for _ in range(count)]
        for connection in connections:
            connection.connect()
        for connection in connections:  # unsigned: 403 from the relay, nothing upstream
            connection.request("GET", "/spread")
        ids = []
        for connection in connections:
            response = connection.getresponse()
            response.read()
            assert response.status == 403
            ids.append(response.getheader("x-amz-request-id") or "")
        served = workers.worker_of(ids)
        splits.append((served.count(1), served.count(2)))
        if min(splits[-1]) >= each:
            return list(zip(connections, served))
        for connection in connections:
            connection.close()
    pytest.fail(f"connections never reached both workers: {splits}")


def test_rate_and_burst_hold_relay_wide(limited: Workers, bucket: str) -> None:
    """Eight connections on both workers, each sending as fast as it is answered:
    at most BURST + RATE * t of the rated client's requests get through."""
    connections = spread(limited, 8, 2)
    url = f"{limited.relay.url}/{bucket}/rated"
    statuses: list[int] = []
    lock = threading.Lock()
    before = limited.sample("s3relay_admission_refusals_total", 'rule="client_rate"')
    start_at = time.monotonic()
    deadline = start_at + LOAD_SECONDS

    def load(connection: http.client.HTTPConnection) -> None:
        while time.monotonic() < deadline:
            connection.request("GET", f"/{bucket}/rated",
                               headers=sign("GET", url, {}, sigv4.EMPTY_SHA256, RATED))
            response = connection.getresponse()
            body = response.read()
            assert response.status == 404 or (
                response.status == 503 and b"<Code>SlowDown</Code>" in body
            ), (response.status, body)
            with lock:
                statuses.append(response.status)
            time.sleep(0.02)

    threads = [threading.Thread(target=load, args=(c,)) for c, _ in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - start_at
    for connection, _ in connections:
        connection.close()
    through, slowed = statuses.count(404), statuses.count(503)
    assert through + slowed == len(statuses)
    # The relay-wide bucket: BURST at once, then RATE a second (``elapsed``
    # includes the client's own overhead: the bound is generous, not loose).
    assert through <= BURST + RATE * elapsed + 1, (through, slowed, elapsed)
    assert through >= BURST, (through, slowed, elapsed)
    assert slowed > 0
    # Both workers let some through: the load was on both.
    records = [r for r in limited.relay.records()
               if r.get("access", {}).get("client") == "rated"]
    assert {r["worker"] for r in records if r["access"]["status"] == 404} == {1, 2}
    counted = limited.sample("s3relay_admission_refusals_total", 'rule="client_rate"')
    assert counted - before == slowed


def test_max_concurrent_requests_holds_relay_wide(limited: Workers, bucket: str) -> None:
    """Uploads held open on connections to both workers: at most CONCURRENT run,
    the others get 503 SlowDown at once; the slots come back when they end."""
    connections = spread(limited, 8, CONCURRENT)
    url = f"{limited.relay.url}/{bucket}/held"
    headers = sign("PUT", url, {"content-length": "1000"}, "UNSIGNED-PAYLOAD", SINGLE)
    head = f"PUT /{bucket}/held HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sockets = {connection.sock: worker for connection, worker in connections}
    for sock in sockets:
        sock.sendall(head.encode() + b"x" * 10)  # and then nothing: the upload stays open
    answered: dict[socket.socket, bytes] = {}
    deadline = time.monotonic() + 20
    settled = None
    while time.monotonic() < deadline:
        waiting = [s for s in sockets if s not in answered]
        readable, _, _ = select.select(waiting, [], [], 0.2)
        for sock in readable:
            answered[sock] = sock.recv(4096)
        if len(answered) >= len(sockets) - CONCURRENT:
            # A straggler refusal would still come: wait a little for it.
            settled = settled or time.monotonic() + 1.5
            if time.monotonic() >= settled:
                break
    held = [sockets[s] for s in sockets if s not in answered]
    try:
        assert all(a.startswith(b"HTTP/1.1 503 ") and b"<Code>SlowDown</Code>" in a
                   for a in answered.values()), list(answered.values())
        assert len(held) == CONCURRENT, (held, len(answered))
        assert sorted(held) == [1, 2]  # one slot each
    finally:
        for connection, _ in connections:
            connection.close()
    # The slots come back: an upload on each worker succeeds again.
    assert harness.eventually(lambda: limited.sample("s3relay_requests_in_flight") == 0)
    again = spread(limited, 4, 1)
    try:
        for worker in (1, 2):
            upload = next(c for c, w in again if w == worker)
            target = f"{limited.relay.url}/{bucket}/after-{worker}"
            upload.request("PUT", f"/{bucket}/after-{worker}", body=b"y",
                           headers=sign("PUT", target, {"content-length": "1"},
                                        "UNSIGNED-PAYLOAD", SINGLE))
            response = upload.getresponse()
            assert response.status == 200, response.read()
    finally:
        for connection, _ in again:
            connection.close()


def response_of(sock: socket.socket) -> bytes:
    """The response on ``sock`` (head and Content-Length body); b"" for a
    connection closed without one."""
    received = b""
    try:
        while True:
            head, found, body = received.partition(b"\r\n\r\n")
            length = CONTENT_LENGTH.search(head) if found else None
            if length is not None and len(body) >= int(length[1]):
                return received
            data = sock.recv(4096)
            if not data:
                return received
            received += data
    except OSError:  # reset: closed at once
        return received


def test_max_connections_holds_relay_wide(workdir: Path, s3: harness.S3Server,
                                          self_key: tuple[str, str]) -> None:
    """Twelve connections at once, on both workers: at most CONNECTIONS are
    served, the others hear 503 SlowDown or are closed at once."""
    workers = start(workdir, s3, self_key, f"max_connections = {CONNECTIONS}\n")
    try:
        rounds = []
        for _ in range(ATTEMPTS):
            sockets = [socket.create_connection(("127.0.0.1", workers.relay.port), timeout=30)
                       for _ in range(12)]
            try:
                for sock in sockets:
                    try:
                        sock.sendall(b"GET /crowd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    except OSError:  # closed at once
                        pass
                answers = [response_of(sock) for sock in sockets]
                served = [a for a in answers if a.startswith(b"HTTP/1.1 403 ")]
                slowed = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
                ids = [REQUEST_ID.search(a)[1].decode() for a in served]  # type: ignore[index]
                by = workers.worker_of(ids)
                rounds.append((len(served), len(slowed), sorted(by)))
                assert all(b"<Code>SlowDown</Code>" in a for a in slowed), slowed
                assert len(served) + len(slowed) + answers.count(b"") == len(sockets), answers
                # Relay-wide.  (Not so the refused ones over time: one that closed
                # makes room for the next to be told SlowDown rather than closed.)
                assert len(served) <= CONNECTIONS, rounds
            finally:
                for sock in sockets:
                    sock.close()
            assert harness.eventually(lambda: workers.sample("s3relay_open_connections") == 0)
            if set(by) == {1, 2}:  # both workers took some: the limit held across them
                break
        assert set(rounds[-1][2]) == {1, 2}, rounds
        # Once they are gone, connections are served again.
        again = socket.create_connection(("127.0.0.1", workers.relay.port), timeout=30)
        again.sendall(b"GET /again HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert again.recv(100).startswith(b"HTTP/1.1 403 ")
        again.close()
    finally:
        harness.stop(workers.relay.process)
