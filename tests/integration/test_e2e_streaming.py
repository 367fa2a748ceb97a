"""Streaming and failure behaviour of a real relay process.

A TCP tap between the relay and the S3 server shows what reached the
upstream and when, and cuts connections on demand.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests

from s3relay.s3 import sigv4
from tests import harness
from tests.integration.conftest import CLIENT_KEY, relay_config
from tests.rawclient import send, sign
from tests.tcptap import TcpTap

MiB = 1024 * 1024


def start(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
          upstream_url: str = "") -> harness.Relay:
    port = harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key, upstream_url)
    return harness.start_relay(workdir, text, port)


@pytest.fixture(scope="module")
def tapped(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
           tap: TcpTap) -> Iterator[harness.Relay]:
    relay = start(workdir, s3, self_key, f"http://127.0.0.1:{tap.port}")
    yield relay
    harness.stop(relay.process)


def peak_rss(relay: harness.Relay) -> int:
    """The relay process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{relay.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def unsigned_put(relay: harness.Relay, bucket: str, key: str, length: int) -> dict[str, str]:
    url = f"{relay.url}/{bucket}/{key}"
    return sign("PUT", url, {"content-length": str(length)}, sigv4.UNSIGNED_PAYLOAD, CLIENT_KEY)


def head_bytes(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"PUT {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_upstream_gets_first_bytes_before_client_sends_last(
    tapped: harness.Relay, tap: TcpTap, upstream: Any, bucket: str
) -> None:
    data = os.urandom(8 * MiB)
    before = tap.sent_up
    sock = socket.create_connection(("127.0.0.1", tapped.port), timeout=30)
    sock.sendall(head_bytes(f"/{bucket}/streamed", unsigned_put(tapped, bucket, "streamed", len(data))))
    sock.sendall(data[:MiB])
    # The first MiB must be on its way upstream while 7 MiB are still unsent.
    assert tap.wait_up(before + MiB // 2), f"only {tap.sent_up - before} bytes went upstream"
    sock.sendall(data[MiB:])
    answer = b""
    while b"\r\n\r\n" not in answer:
        piece = sock.recv(65536)
        assert piece, answer
        answer += piece
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert upstream.get_object(Bucket=bucket, Key="streamed")["Body"].read() == data


def pattern(total: int, block: int = MiB) -> Iterator[bytes]:
    """``total`` bytes of incompressible data, generated block by block."""
    seed = os.urandom(block)
    for i in range(0, total, block):
        yield (seed[i // block % 251:] + seed[: i // block % 251])[: min(block, total - i)]


def test_large_put_and_get_keep_memory_flat(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], upstream: Any, bucket: str
) -> None:
    relay = start(workdir, s3, self_key)
    try:
        size = 256 * MiB
        small = unsigned_put(relay, bucket, "warm", 1)
        assert send(f"{relay.url}/{bucket}/warm", "PUT", small, b"w").status == 200
        baseline = peak_rss(relay)

        digest = hashlib.sha256()
        def body() -> Iterator[bytes]:
            for block in pattern(size):
                digest.update(block)
                yield block
        headers = unsigned_put(relay, bucket, "large", size)
        assert send(f"{relay.url}/{bucket}/large", "PUT", headers, body(), timeout=300).status == 200

        url = f"{relay.url}/{bucket}/large"
        headers = sign("GET", url, {}, sigv4.EMPTY_SHA256, CLIENT_KEY)
        got = hashlib.sha256()
        with requests.get(url, headers=headers, stream=True, timeout=300) as response:
            assert response.status_code == 200
            for block in response.iter_content(MiB):
                got.update(block)
        assert got.digest() == digest.digest()
        growth = peak_rss(relay) - baseline
        # Buffering either body would add at least 256 MiB.
        print(f"peak RSS {baseline / MiB:.1f} MiB before, grew by {growth / MiB:.1f} MiB")
        assert growth < 48 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"
    finally:
        harness.stop(relay.process)


def test_upstream_unreachable_is_503(workdir: Path, s3: harness.S3Server,
                                     self_key: tuple[str, str]) -> None:
    relay = start(workdir, s3, self_key, f"http://127.0.0.1:{harness.free_port()}")
    try:
        url = f"{relay.url}/bucket/key"
        reply = send(url, "GET", sign("GET", url, {}, sigv4.EMPTY_SHA256, CLIENT_KEY))
        assert (reply.status, reply.code()) == (503, "ServiceUnavailable")
        assert b"<RequestId>" in reply.body
        assert "upstream unreachable" in relay.output()
    finally:
        harness.stop(relay.process)


def test_upstream_dying_mid_response_aborts_the_client(
    tapped: harness.Relay, tap: TcpTap, upstream: Any, bucket: str
) -> None:
    data = os.urandom(4 * MiB)
    upstream.put_object(Bucket=bucket, Key="cut", Body=data)
    url = f"{tapped.url}/{bucket}/cut"
    tap.cut_down_after = 100_000
    try:
        with pytest.raises(requests.exceptions.RequestException) as excinfo:
            response = requests.get(url, headers=sign("GET", url, {}, sigv4.EMPTY_SHA256,
                                                      CLIENT_KEY), timeout=20)
            # Reaching here means the relay made a cut body look complete.
            assert len(response.content) == len(data)
        # Aborted by the relay, not left hanging until the client gave up.
        assert not isinstance(excinfo.value, requests.exceptions.Timeout), excinfo.value
    finally:
        tap.cut_down_after = None
    response = requests.get(url, headers=sign("GET", url, {}, sigv4.EMPTY_SHA256, CLIENT_KEY),
                            timeout=30)
    assert response.status_code == 200 and response.content == data


def test_client_abort_mid_upload_stores_nothing(
    tapped: harness.Relay, bucket: str, object_keys: Callable[[str], list[str]]
) -> None:
    data = os.urandom(4 * MiB)
    sock = socket.create_connection(("127.0.0.1", tapped.port), timeout=30)
    sock.sendall(head_bytes(f"/{bucket}/aborted", unsigned_put(tapped, bucket, "aborted", len(data))))
    sock.sendall(data[: 2 * MiB])
    time.sleep(0.3)
    sock.close()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert object_keys(bucket) == []
        time.sleep(0.2)
    url = f"{tapped.url}/{bucket}/after"
    headers = sign("PUT", url, {"content-length": "2"}, sigv4.UNSIGNED_PAYLOAD, CLIENT_KEY)
    assert send(url, "PUT", headers, b"ok").status == 200
    assert object_keys(bucket) == ["after"]


def test_client_abort_mid_download_leaves_relay_serving(
    tapped: harness.Relay, upstream: Any, bucket: str
) -> None:
    upstream.put_object(Bucket=bucket, Key="big", Body=os.urandom(32 * MiB))
    url = f"{tapped.url}/{bucket}/big"
    with requests.get(url, headers=sign("GET", url, {}, sigv4.EMPTY_SHA256, CLIENT_KEY),
                      stream=True, timeout=30) as response:
        assert response.status_code == 200
        next(response.iter_content(MiB))
    small = f"{tapped.url}/{bucket}"
    reply = send(small, "GET", sign("GET", small, {}, sigv4.EMPTY_SHA256, CLIENT_KEY))
    assert reply.status == 200 and b"<Key>big</Key>" in reply.body


def test_upstream_connections_are_reused(tapped: harness.Relay, tap: TcpTap, bucket: str) -> None:
    url = f"{tapped.url}/{bucket}"
    send(url, "GET", sign("GET", url, {}, sigv4.EMPTY_SHA256, CLIENT_KEY))
    before = tap.connections
    for i in range(20):
        key = f"{url}/k{i}"
        headers = sign("PUT", key, {"content-length": "1"}, sigv4.UNSIGNED_PAYLOAD, CLIENT_KEY)
        assert send(key, "PUT", headers, b"x").status == 200
        assert send(url, "GET", sign("GET", url, {}, sigv4.EMPTY_SHA256, CLIENT_KEY)).status == 200
    assert tap.connections - before <= 1, f"{tap.connections - before} new upstream connections"
