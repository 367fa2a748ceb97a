"""Every request-target form, over raw sockets, against real relay processes.

``OPTIONS *`` (and ``GET *`` ...) was answered by Twisted itself -- 200 or 405
with ``Server: TwistedWeb/<version>`` -- before admission and with no access
record; ``GET http://host/path`` was refused as an unparsable URI.  Here each
form is answered by the relay (an S3 XML error, or the relayed answer), with an
access record, no ``Server`` header of the relay's, and nothing reaching the
upstream for a refused one (a TCP tap counts the bytes).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from s3relay.s3 import sigv4
from tests import harness
from tests.integration.conftest import CLIENT_KEY, relay_config
from tests.rawclient import sign
from tests.tcptap import TcpTap


def start(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], tap: TcpTap,
          server_keys: str) -> harness.Relay:
    port = harness.free_port()
    text = relay_config(
        s3, f"tcp:{port}:interface=127.0.0.1", self_key, f"http://127.0.0.1:{tap.port}"
    )
    text = text.replace("[server]\n", f"[server]\n{server_keys.replace('PORT', str(port))}\n", 1)
    return harness.start_relay(workdir, text, port)


@pytest.fixture(scope="module")
def relay(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], tap: TcpTap
) -> Iterator[harness.Relay]:
    """Loopback allowed, Host checked."""
    relay = start(workdir, s3, self_key, tap, "allowed_hostnames = 127.0.0.1:PORT")
    yield relay
    harness.stop(relay.process)


@pytest.fixture(scope="module")
def closed(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], tap: TcpTap
) -> Iterator[harness.Relay]:
    """A relay the test's address (loopback) may not use."""
    relay = start(workdir, s3, self_key, tap, "allowed_networks = 10.0.0.0/8")
    yield relay
    harness.stop(relay.process)


def exchange(relay: harness.Relay, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data``, read until the relay closes; (status, headers, body) of the one answer."""
    with socket.create_connection(("127.0.0.1", relay.port), timeout=20) as sock:
        sock.sendall(data)
        out = b""
        while piece := sock.recv(65536):
            out += piece
    head, _, body = out.partition(b"\r\n\r\n")
    assert out.count(b"HTTP/1.1 ") == 1, out[:500]
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, head
        headers[name.lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers, body


def code_of(body: bytes) -> str:
    start, end = body.find(b"<Code>"), body.find(b"</Code>")
    assert start >= 0, body[:500]
    return body[start + 6 : end].decode()


def nothing_upstream(tap: TcpTap, before: int) -> bool:
    time.sleep(0.3)
    return tap.sent_up == before


def raw(method: str, target: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("method", ["OPTIONS", "GET", "PUT", "DELETE"])
def test_asterisk_is_answered_by_the_relay(
    method: str, relay: harness.Relay, tap: TcpTap
) -> None:
    before = tap.sent_up
    headers = {"Host": f"127.0.0.1:{relay.port}", "Connection": "close"}
    if method == "PUT":
        headers["Content-Length"] = "0"
    status, got, body = exchange(relay, raw(method, "*", headers))
    assert (status, code_of(body)) == (400, "InvalidURI")
    assert "server" not in got, got
    record = relay.access(got["x-amz-request-id"])
    assert (record["method"], record["status"], record["error_code"]) == (
        method, 400, "InvalidURI"
    )
    assert nothing_upstream(tap, before)


def test_asterisk_from_outside_allowed_networks_is_refused_by_admission(
    closed: harness.Relay, tap: TcpTap
) -> None:
    before = tap.sent_up
    status, got, body = exchange(
        closed, raw("OPTIONS", "*", {"Host": "127.0.0.1", "Connection": "close"})
    )
    assert (status, code_of(body)) == (403, "AccessDenied")
    assert "server" not in got, got
    assert "allowed_networks" in closed.access(got["x-amz-request-id"])["reason"]
    assert nothing_upstream(tap, before)


def test_absolute_form_is_served_as_origin_form(
    relay: harness.Relay, tap: TcpTap, bucket: str
) -> None:
    path = f"/{bucket}"
    headers = sign("GET", f"{relay.url}{path}", {}, sigv4.EMPTY_SHA256, CLIENT_KEY)
    tap.up_log = bytearray()
    try:
        status, got, body = exchange(
            relay, raw("GET", f"http://127.0.0.1:{relay.port}{path}",
                       {**headers, "connection": "close"})
        )
        upstream_head = bytes(tap.up_log)
    finally:
        tap.up_log = None
    assert status == 200 and b"<ListBucketResult" in body, body[:300]
    assert "twisted" not in got.get("server", "").lower(), got  # (the upstream's own passes)
    assert upstream_head.startswith(f"GET {path} HTTP/1.1\r\n".encode()), upstream_head[:200]
    record = relay.access(got["x-s3relay-request-id"])
    assert (record["operation"], record["bucket"], record["status"]) == (
        "ListObjects", bucket, 200
    )


def test_absolute_form_naming_another_host_is_refused(
    relay: harness.Relay, tap: TcpTap, bucket: str
) -> None:
    path = f"/{bucket}"
    headers = sign("GET", f"{relay.url}{path}", {}, sigv4.EMPTY_SHA256, CLIENT_KEY)
    before = tap.sent_up
    status, got, body = exchange(
        relay, raw("GET", f"http://s3.elsewhere.test{path}", {**headers, "connection": "close"})
    )
    assert (status, code_of(body)) == (400, "InvalidRequest")
    assert "server" not in got, got
    assert "authority" in relay.access(got["x-amz-request-id"])["reason"]
    assert nothing_upstream(tap, before)


def test_connect_is_refused_and_closed(relay: harness.Relay, tap: TcpTap) -> None:
    before = tap.sent_up
    # A tunnel to the upstream, asked with a Host admission lets through.
    target = f"127.0.0.1:{tap.port}"
    status, got, body = exchange(relay, raw("CONNECT", target, {"Host": f"127.0.0.1:{relay.port}"}))
    assert (status, code_of(body)) == (405, "MethodNotAllowed")
    assert got["allow"] == "GET, HEAD, PUT, POST, DELETE"
    assert got["connection"] == "close"  # and exchange() read until the relay closed
    assert "server" not in got, got
    assert relay.access(got["x-amz-request-id"])["method"] == "CONNECT"
    assert nothing_upstream(tap, before)
