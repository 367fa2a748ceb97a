"""Bad input over raw sockets against a real relay process (issue 6).

Malformed request lines, oversize heads, invalid encodings, smuggling attempts,
HTTP/1.0 and pipelining.  Each refusal must be an S3 XML error (never Twisted's
bare 400), nothing may reach the upstream (a TCP tap between the relay and the
S3 server counts the bytes), and the relay keeps serving afterwards.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from s3relay.s3 import sigv4
from tests import harness
from tests.integration.conftest import CLIENT_KEY, relay_config
from tests.rawclient import http_chunked, sign, signed_chunks
from tests.tcptap import TcpTap


@pytest.fixture(scope="module")
def tapped(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], tap: TcpTap
) -> Iterator[harness.Relay]:
    port = harness.free_port()
    text = relay_config(
        s3, f"tcp:{port}:interface=127.0.0.1", self_key, f"http://127.0.0.1:{tap.port}"
    )
    relay = harness.start_relay(workdir, text, port)
    yield relay
    harness.stop(relay.process)


def exchange(relay: harness.Relay, data: bytes, timeout: float = 20) -> bytes:
    """Send ``data``, then read until the relay closes the connection."""
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=timeout)
    try:
        sock.sendall(data)
        out = b""
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            out += piece
        return out
    finally:
        sock.close()


def head(method: str, path: str, headers: dict[str, str], version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def signed(relay: harness.Relay, method: str, path: str, payload: str = sigv4.EMPTY_SHA256,
           **extra: str) -> dict[str, str]:
    return sign(method, f"{relay.url}{path}", extra, payload, CLIENT_KEY)


def code_of(answer: bytes) -> str:
    start, end = answer.find(b"<Code>"), answer.find(b"</Code>")
    assert start >= 0, answer[:500]
    return answer[start + 6 : end].decode()


def assert_nothing_upstream(tap: TcpTap, before: int) -> None:
    time.sleep(0.2)
    assert tap.sent_up == before, "a refused request reached the upstream"


def still_serving(relay: harness.Relay, bucket: str) -> None:
    answer = exchange(
        relay, head("GET", f"/{bucket}", {**signed(relay, "GET", f"/{bucket}"),
                                          "connection": "close"})
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


BAD_HEADS = {
    "garbage request line": (b"GARBAGE\r\n\r\n", "InvalidRequest"),
    "two-part request line": (b"GET /x\r\nHost: a\r\n\r\n", "InvalidRequest"),
    "space in header name": (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", "InvalidRequest"),
    "8-bit header name": (b"GET / HTTP/1.1\r\nHo\xffst: x\r\n\r\n", "InvalidRequest"),
    "NUL in header value": (b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", "InvalidRequest"),
    "header without colon": (b"GET / HTTP/1.1\r\nnocolon\r\n\r\n", "InvalidRequest"),
    "oversize header": (b"GET / HTTP/1.1\r\nX-A: " + b"v" * 20000 + b"\r\n\r\n",
                        "RequestHeaderSectionTooLarge"),
    "too many headers": (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(150))
                         + b"\r\n", "RequestHeaderSectionTooLarge"),
    "oversize URL": (b"GET /" + b"k" * 9000 + b" HTTP/1.1\r\n\r\n",
                     "RequestHeaderSectionTooLarge"),
    "endless request line": (b"GET /" + b"k" * 40000, "RequestHeaderSectionTooLarge"),
    "Content-Length with Transfer-Encoding": (
        b"POST /b/k HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", "InvalidRequest"),
    "Transfer-Encoding then Content-Length": (
        b"POST /b/k HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4"
        b"\r\n\r\n0\r\n\r\n", "InvalidRequest"),
    "duplicate Content-Length": (
        b"PUT /b/k HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        "InvalidRequest"),
    "conflicting Content-Length": (
        b"PUT /b/k HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
        "InvalidRequest"),
    "list in Content-Length": (
        b"PUT /b/k HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", "InvalidRequest"),
    "negative Content-Length": (
        b"PUT /b/k HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "InvalidRequest"),
    "unknown Transfer-Encoding": (
        b"PUT /b/k HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "InvalidRequest"),
}


@pytest.mark.parametrize("name", list(BAD_HEADS))
def test_bad_head_gets_s3_error_and_nothing_goes_upstream(
    name: str, tapped: harness.Relay, tap: TcpTap, bucket: str
) -> None:
    data, code = BAD_HEADS[name]
    before = tap.sent_up
    answer = exchange(tapped, data)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"\r\nContent-Type: application/xml\r\n" in answer
    assert code_of(answer) == code
    assert answer.count(b"HTTP/1.1 ") == 1  # nothing smuggled through
    assert_nothing_upstream(tap, before)
    still_serving(tapped, bucket)


def test_signed_request_with_smuggling_headers_is_refused(
    tapped: harness.Relay, tap: TcpTap, bucket: str, object_keys: Callable[[str], list[str]]
) -> None:
    """A correctly signed PUT does not make a Content-Length + Transfer-Encoding pair pass."""
    path = f"/{bucket}/smuggle"
    headers = signed(tapped, "PUT", path, sigv4.UNSIGNED_PAYLOAD, **{"content-length": "5"})
    headers["transfer-encoding"] = "chunked"
    before = tap.sent_up
    answer = exchange(tapped, head("PUT", path, headers) + b"5\r\nhello\r\n0\r\n\r\n")
    assert code_of(answer) == "InvalidRequest"
    assert_nothing_upstream(tap, before)
    assert object_keys(bucket) == []


def test_non_ascii_header_value_is_a_clean_refusal(
    tapped: harness.Relay, tap: TcpTap, bucket: str
) -> None:
    before = tap.sent_up
    answer = exchange(tapped, b"GET /%s/k HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Meta-A: \xff\xfe"
                      b"\r\nConnection: close\r\n\r\n" % bucket.encode())
    assert answer.startswith(b"HTTP/1.1 403 "), answer[:300]
    assert code_of(answer) == "AccessDenied"
    assert_nothing_upstream(tap, before)


def test_bad_chunk_size_mid_body_stores_nothing(
    tapped: harness.Relay, bucket: str, object_keys: Callable[[str], list[str]]
) -> None:
    """The request was accepted and went upstream; its body then turns out
    malformed: the client gets InvalidRequest, the upstream an aborted upload."""
    data = os.urandom(200_000)
    path = f"/{bucket}/chunked"
    mode = sigv4.STREAMING_SIGNED
    headers = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
               "transfer-encoding": "chunked"}
    headers = sign("PUT", f"{tapped.url}{path}", headers, mode, CLIENT_KEY)
    pieces = http_chunked(signed_chunks(data, 65536, headers, CLIENT_KEY[1]), 50_000)
    # Two good HTTP chunks (the upload is under way), then a chunk size that is none.
    answer = exchange(tapped, head("PUT", path, headers) + b"".join(pieces[:2]) + b"zz\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert code_of(answer) == "InvalidRequest"
    time.sleep(0.5)
    assert object_keys(bucket) == []
    still_serving(tapped, bucket)


def test_http_1_0_request_is_answered_and_closed(
    tapped: harness.Relay, bucket: str
) -> None:
    path = f"/{bucket}"
    answer = exchange(tapped, head("GET", path, signed(tapped, "GET", path), "HTTP/1.0"))
    # Answered in HTTP/1.0 and closed (exchange() read until the close).
    assert answer.startswith(b"HTTP/1.0 200"), answer[:300]
    assert b"<ListBucketResult" in answer


def test_pipelined_requests_are_answered_in_order(
    tapped: harness.Relay, upstream: Any, bucket: str
) -> None:
    put = f"/{bucket}/piped"
    first = head("PUT", put, signed(tapped, "PUT", put, sigv4.UNSIGNED_PAYLOAD,
                                    **{"content-length": "5"})) + b"hello"
    second = head("GET", put, signed(tapped, "GET", put))
    third = head("GET", f"/{bucket}", {**signed(tapped, "GET", f"/{bucket}"),
                                        "connection": "close"})
    answer = exchange(tapped, first + second + third)
    assert answer.count(b"HTTP/1.1 ") == 3, answer[:1000]
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3, answer[:1000]
    assert b"\r\n\r\nhelloHTTP/1.1 200 OK\r\n" in answer  # the GET's body, then the list
    assert answer.endswith(b"</ListBucketResult>")
    assert upstream.get_object(Bucket=bucket, Key="piped")["Body"].read() == b"hello"


def test_pipelined_request_after_a_malformed_one_is_not_served(
    tapped: harness.Relay, tap: TcpTap, bucket: str
) -> None:
    path = f"/{bucket}"
    before = tap.sent_up
    answer = exchange(tapped, b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"
                      + head("GET", path, signed(tapped, "GET", path)))
    assert answer.count(b"HTTP/1.1 ") == 1 and code_of(answer) == "InvalidRequest"
    assert_nothing_upstream(tap, before)
