"""Upstream faults and leaks, end to end through a real relay process.

A scripted raw upstream (tests/fault_upstream.py) answers 500/503 with S3
error documents or closes a kept-alive connection as the next request
arrives; moto behind a TcpTap serves the leak checks.
"""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from s3relay.s3 import sigv4
from tests import harness
from tests.fault_upstream import (
    Answer,
    FaultUpstream,
    Seen,
    never,
    s3_error,
    s3_ok,
    stale_after_first,
)
from tests.integration.conftest import CLIENT_KEY, relay_config
from tests.rawclient import Reply, send, sign
from tests.tcptap import TcpTap

MiB = 1024 * 1024


def start(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
          upstream_url: str) -> harness.Relay:
    port = harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key, upstream_url)
    return harness.start_relay(workdir, text, port)


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultUpstream]:
    with FaultUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def faulty(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
           fault: FaultUpstream) -> Iterator[harness.Relay]:
    relay = start(workdir, s3, self_key, fault.url)
    yield relay
    harness.stop(relay.process)


@pytest.fixture
def script(fault: FaultUpstream) -> Iterator[FaultUpstream]:
    """The fault upstream, answering well again after the test."""
    yield fault
    fault.script, fault.drop = s3_ok, never


def get(relay: harness.Relay, path: str) -> Reply:
    url = relay.url + path
    return send(url, "GET", sign("GET", url, {}, sigv4.EMPTY_SHA256, CLIENT_KEY))


def put(relay: harness.Relay, path: str, body: bytes, **extra: str) -> Reply:
    url = relay.url + path
    headers = sign("PUT", url, {"content-length": str(len(body)), **extra},
                   sigv4.UNSIGNED_PAYLOAD, CLIENT_KEY)
    return send(url, "PUT", headers, body)


def put_head(relay: harness.Relay, path: str, length: int) -> bytes:
    """A signed PUT request head, for a client that sends its body later."""
    url = relay.url + path
    headers = sign("PUT", url, {"content-length": str(length)}, sigv4.UNSIGNED_PAYLOAD,
                   CLIENT_KEY)
    lines = [f"PUT {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_reply(sock: socket.socket) -> bytes:
    """A whole response on a connection the relay keeps open (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, data
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(rest) < length:
        piece = sock.recv(65536)
        assert piece, data
        rest += piece
    return head + b"\r\n\r\n" + rest


def access_records(relay: harness.Relay) -> list[dict[str, Any]]:
    return [r["access"] for r in relay.records() if "access" in r]


# -- 1. 500/503 pass through ------------------------------------------------


@pytest.mark.parametrize("status, code", [(500, "InternalError"), (503, "SlowDown")])
def test_upstream_5xx_reaches_the_client_unchanged(
    faulty: harness.Relay, script: FaultUpstream, status: int, code: str
) -> None:
    answers: list[Answer] = []

    def failing(seen: Seen) -> Answer:
        answer = s3_error(status, code, "Please reduce your request rate.",
                          f"UPSTREAM{len(answers):04d}")
        answers.append(answer)
        return answer

    script.script = failing
    reply = get(faulty, "/bucket5xx?list-type=2")
    assert reply.status == status
    assert reply.body == answers[0].body  # byte for byte
    assert reply.code() == code
    assert reply.headers["x-amz-request-id"] == "UPSTREAM0000"
    assert reply.headers["content-type"] == "application/xml"

    # A PUT with a body gets the same, and its body was read to the end.
    data = os.urandom(100_000)
    reply = put(faulty, "/bucket5xx/key", data)
    assert (reply.status, reply.body) == (status, answers[1].body)
    assert reply.headers["x-amz-request-id"] == "UPSTREAM0001"
    assert script.seen[-1].body == data

    # The relay keeps serving.
    script.script = s3_ok
    assert get(faulty, "/bucket5xx?list-type=2").status == 200
    assert put(faulty, "/bucket5xx/key", b"fine").status == 200
    assert harness.eventually(lambda: sum(r["upstream_status"] == status
                                for r in access_records(faulty)) >= 2)
    record = [r for r in access_records(faulty) if r["upstream_status"] == status][-1]
    assert (record["status"], record["upstream_request_id"]) == (status, "UPSTREAM0001")


# -- 2. stale pooled connections ---------------------------------------------


def warm(relay: harness.Relay) -> None:
    """Leave at least one answered connection in the relay's pool."""
    assert get(relay, "/warm?list-type=2").status == 200


def test_stale_pooled_connection_retried_for_bodyless_requests(
    faulty: harness.Relay, script: FaultUpstream
) -> None:
    warm(faulty)
    script.drop = stale_after_first
    before = len(script.seen)
    # A copy is a PUT without a body: Twisted's own retry leaves PUTs alone.
    reply = put(faulty, "/stale/copy", b"", **{"x-amz-copy-source": "/stale/source"})
    assert reply.status == 200, reply.body
    assert get(faulty, "/stale?list-type=2").status == 200
    seen = script.seen[before:]
    assert [(s.method, s.answered, s.index) for s in seen] == [
        ("PUT", False, seen[0].index), ("PUT", True, 0),
        ("GET", False, seen[2].index), ("GET", True, 0),
    ]
    assert seen[0].index > 0 and seen[2].index > 0
    assert harness.eventually(lambda: faulty.output().count("retrying on a new connection") >= 2)


def test_retried_once_only(faulty: harness.Relay, script: FaultUpstream) -> None:
    warm(faulty)
    script.drop = lambda seen: 0 if seen.method == "PUT" else None  # every connection dies
    before = len(script.seen)
    reply = put(faulty, "/stale/never", b"", **{"x-amz-copy-source": "/stale/source"})
    assert (reply.status, reply.code()) == (502, "InternalError")
    time.sleep(0.5)  # a third attempt, if there were one, would have arrived
    assert [(s.method, s.answered) for s in script.seen[before:]] == [("PUT", False)] * 2
    script.drop = never
    assert get(faulty, "/stale?list-type=2").status == 200


def test_stale_pooled_connection_retried_when_no_body_byte_was_sent(
    faulty: harness.Relay, script: FaultUpstream
) -> None:
    warm(faulty)
    script.drop = stale_after_first
    before, connections = len(script.seen), script.connections
    data = os.urandom(3 * MiB)
    sock = socket.create_connection(("127.0.0.1", faulty.port), timeout=30)
    try:
        sock.sendall(put_head(faulty, "/stale/body", len(data)))
        # The relay forwards the head at once; the upstream drops it, and the
        # relay tries again on a new connection, all before any body byte.
        assert harness.eventually(lambda: len(script.seen) >= before + 2), script.seen[before:]
        assert script.connections == connections + 1
        sock.sendall(data)
        answer = read_reply(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    dropped, retried = script.seen[before:before + 2]
    assert (dropped.answered, dropped.body) == (False, b"")
    assert retried.answered and retried.index == 0
    assert retried.body == data


def test_no_retry_once_body_bytes_went_upstream(
    faulty: harness.Relay, script: FaultUpstream
) -> None:
    warm(faulty)
    # Close kept-alive connections only after the first body byte arrived.
    script.drop = lambda seen: 1 if seen.index > 0 else None
    before = len(script.seen)
    data = os.urandom(4 * MiB)
    sock = socket.create_connection(("127.0.0.1", faulty.port), timeout=30)
    answer = b""
    try:
        sock.sendall(put_head(faulty, "/stale/sent", len(data)))
        # Still uploading when the upstream connection dies: a retry could only
        # send the rest of the body (Twisted would notice the short body, but
        # only after the upstream got a second, truncated request).
        for offset in range(0, len(data), 256 * 1024):
            sock.sendall(data[offset:offset + 256 * 1024])
            time.sleep(0.01)
        answer = read_reply(sock)
    except OSError:
        pass  # the relay may cut the upload short; the upstream side is what counts
    finally:
        sock.close()
    if answer:
        assert answer.startswith(b"HTTP/1.1 502"), answer[:200]
    time.sleep(0.5)  # a retry, if there were one, would have reached the upstream
    puts = [s for s in script.seen[before:] if s.method == "PUT"]
    assert len(puts) == 1, puts
    assert not puts[0].answered and puts[0].body
    script.drop = never
    reply = put(faulty, "/stale/sent", data[:1000])
    assert reply.status == 200, reply.body
    assert script.seen[-1].body == data[:1000]


# -- 3. nothing leaks after aborts and resets -------------------------------


@pytest.fixture(scope="module")
def watched(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
            tap: TcpTap) -> Iterator[harness.Relay]:
    relay = start(workdir, s3, self_key, f"http://127.0.0.1:{tap.port}")
    yield relay
    harness.stop(relay.process)


def usage(relay: harness.Relay) -> tuple[int, int]:
    """(open file descriptors, established TCP connections) of the relay process."""
    now = harness.process_usage(relay.process.pid)
    return now.fds, len(now.connections)


def quiet_usage(relay: harness.Relay) -> tuple[int, int]:
    """The relay's usage once connections the last client closed are let go."""
    readings = []
    for _ in range(10):
        readings.append(usage(relay))
        time.sleep(0.1)
    return min(r[0] for r in readings), min(r[1] for r in readings)


def settle(relay: harness.Relay, baseline: tuple[int, int]) -> tuple[int, int]:
    """Wait (bounded) until the relay's usage is back to ``baseline``; the last reading."""
    readings = [usage(relay)]

    def back() -> bool:
        readings.append(usage(relay))
        return readings[-1][0] <= baseline[0] and readings[-1][1] <= baseline[1]

    harness.eventually(back, 30)
    return readings[-1]


ABORTS = 4


def test_aborts_and_resets_leak_no_descriptors_or_connections(
    watched: harness.Relay, tap: TcpTap, upstream: Any, bucket: str,
    object_keys: Callable[[str], list[str]],
) -> None:
    upstream.put_object(Bucket=bucket, Key="big", Body=os.urandom(16 * MiB))
    small = f"{watched.url}/{bucket}"
    for _ in range(3):  # the pool holds one idle upstream connection now
        reply = send(small, "GET", sign("GET", small, {}, sigv4.EMPTY_SHA256, CLIENT_KEY))
        assert reply.status == 200
    baseline = quiet_usage(watched)
    rss = harness.process_usage(watched.process.pid).rss_kib
    print(f"baseline: {baseline[0]} fds, {baseline[1]} established connections, "
          f"RSS {rss} KiB")
    # The measure sees a connection the relay holds (so a leaked one would show).
    held = socket.create_connection(("127.0.0.1", watched.port), timeout=30)
    assert harness.eventually(lambda: usage(watched)[0] > baseline[0] and usage(watched)[1] > baseline[1])
    held.close()

    data = os.urandom(4 * MiB)
    for i in range(ABORTS):  # client aborts mid-upload
        sock = socket.create_connection(("127.0.0.1", watched.port), timeout=30)
        sock.sendall(put_head(watched, f"/{bucket}/aborted{i}", len(data)))
        sock.sendall(data[: MiB])
        time.sleep(0.2)
        sock.close()
    url = f"{watched.url}/{bucket}/big"
    for _ in range(ABORTS):  # client aborts mid-download
        with requests.get(url, headers=sign("GET", url, {}, sigv4.EMPTY_SHA256, CLIENT_KEY),
                          stream=True, timeout=30) as response:
            assert response.status_code == 200
            next(response.iter_content(MiB))
    tap.cut_down_after = 200_000
    try:
        for _ in range(ABORTS):  # the upstream resets mid-response
            with pytest.raises(requests.exceptions.RequestException):
                requests.get(url, headers=sign("GET", url, {}, sigv4.EMPTY_SHA256, CLIENT_KEY),
                             timeout=30).content
    finally:
        tap.cut_down_after = None

    # Still serving, and everything let go.
    for _ in range(3):
        reply = send(small, "GET", sign("GET", small, {}, sigv4.EMPTY_SHA256, CLIENT_KEY))
        assert reply.status == 200 and b"<Key>big</Key>" in reply.body
    final = settle(watched, baseline)
    print(f"after {3 * ABORTS} aborted exchanges: {final[0]} fds, {final[1]} established, "
          f"RSS {harness.process_usage(watched.process.pid).rss_kib} KiB")
    assert final[0] <= baseline[0], f"{final[0] - baseline[0]} file descriptors leaked"
    assert final[1] <= baseline[1], f"{final[1] - baseline[1]} connections leaked"
    assert object_keys(bucket) == ["big"]
