"""Every request-target form goes through admission and gets an access record.

RFC 9112 §3.2 has four forms: origin (``/path``), absolute
(``http://host/path``), authority (``host:port``, CONNECT's) and asterisk
(``*``).  Twisted answered ``*`` itself (``OPTIONS *`` 200, ``GET *`` 405)
before the relay's admission and without an access record, and named itself
in a ``Server`` header on every response.  Here: the relay's answer for each
form (``s3relay.http.target``), in memory, and no ``Server`` header from the
relay's site or the management site.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, globalLogPublisher

from s3relay.http.target import ABSOLUTE, ASTERISK, AUTHORITY, ORIGIN, read_target
from s3relay.ops.management import Readiness, make_management_site
from s3relay.ops.metrics import RelayMetrics
from tests.unit.memory import HOST, Client, Message, Relay, config_text, parse_messages

OUTSIDE = config_text("allowed_networks = 10.0.0.0/8")  # the test peer is 127.0.0.1
NAMED = config_text(f"allowed_hostnames = {HOST}")


@pytest.fixture
def access() -> Iterator[list[dict[str, Any]]]:
    """The access records logged while the test runs."""
    records: list[dict[str, Any]] = []

    def observe(event: LogEvent) -> None:
        if "access" in event:
            records.append(event["access"])

    globalLogPublisher.addObserver(observe)
    try:
        yield records
    finally:
        globalLogPublisher.removeObserver(observe)


def answer(client: Client) -> Message:
    """The one response on ``client``: an S3 XML error or not, never naming a server."""
    responses = client.responses()
    assert len(responses) == 1, client.received()
    response = responses[0]
    assert response.header("server") is None, response.head
    return response


def s3_code(response: Message) -> str:
    assert response.header("content-type") == "application/xml", response.head
    code = re.search(r"<Code>(.*?)</Code>", response.body.decode("utf-8"))
    assert code is not None, response.body
    return code.group(1)


def send(relay: Relay, raw: bytes) -> Client:
    client = relay.connect()
    client.send(raw)
    return client


# Asterisk-form.

STAR_REQUESTS = [
    b"OPTIONS * HTTP/1.1\r\nHost: relay.test\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: relay.test\r\n\r\n",
    b"PUT * HTTP/1.1\r\nHost: relay.test\r\nContent-Length: 3\r\n\r\nabc",
    b"DELETE * HTTP/1.1\r\nHost: relay.test\r\n\r\n",
]


@pytest.mark.parametrize("raw", STAR_REQUESTS, ids=lambda r: r.split(b" ")[0].decode())
def test_asterisk_from_outside_allowed_networks_is_refused_by_admission(
    raw: bytes, access: list[dict[str, Any]]
) -> None:
    relay = Relay(OUTSIDE)
    response = answer(send(relay, raw))
    assert response.status == 403 and s3_code(response) == "AccessDenied"
    (record,) = access
    assert record["method"] == raw.split(b" ")[0].decode()
    assert (record["status"], record["error_code"]) == (403, "AccessDenied")
    assert "allowed_networks" in record["reason"]
    assert record["request_id"] == response.header("x-amz-request-id")
    assert relay.upstream.calls == []


def test_asterisk_with_a_host_not_allowed_is_refused_by_admission(
    access: list[dict[str, Any]]
) -> None:
    relay = Relay(NAMED)
    response = answer(send(relay, b"OPTIONS * HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n"))
    assert response.status == 400 and s3_code(response) == "InvalidArgument"
    (record,) = access
    assert record["error_code"] == "InvalidArgument" and "allowed_hostnames" in record["reason"]


@pytest.mark.parametrize("raw", STAR_REQUESTS, ids=lambda r: r.split(b" ")[0].decode())
def test_asterisk_from_an_allowed_network_is_invalid_uri(
    raw: bytes, access: list[dict[str, Any]]
) -> None:
    relay = Relay(NAMED)
    client = send(relay, raw)
    response = answer(client)
    assert response.status == 400 and s3_code(response) == "InvalidURI"
    assert "<Resource>*</Resource>" in response.body.decode()
    (record,) = access
    assert (record["status"], record["error_code"]) == (400, "InvalidURI")
    assert "asterisk-form" in record["reason"]
    assert relay.upstream.calls == []
    assert not client.transport.disconnecting  # an ordinary refusal: keep-alive


# Absolute-form: served as origin-form, the authority its Host.


def absolute(raw: bytes, target: bytes, host: bytes | None = None) -> bytes:
    """``raw`` (signed for ``/path`` at HOST) sent with an absolute-form ``target``,
    its Host line replaced by ``host`` (or dropped)."""
    line, _, rest = raw.partition(b"\r\n")
    method, _, _ = line.split(b" ")
    rest = re.sub(rb"(?m)^Host: [^\r]*\r\n", b"" if host is None else b"Host: " + host + b"\r\n",
                  rest, count=1)
    return method + b" " + target + b" HTTP/1.1\r\n" + rest


@pytest.mark.parametrize(
    "authority, host",
    [(b"relay.test", HOST.encode()), (b"RELAY.test", HOST.encode()), (b"relay.test", None)],
    ids=["same-host", "same-host-other-case", "no-host"],
)
def test_signed_absolute_form_is_relayed_as_origin_form(
    authority: bytes, host: bytes | None, access: list[dict[str, Any]]
) -> None:
    relay = Relay(NAMED)
    signed = relay.sign("GET", "/bucket/some/key?versionId=v1")
    target = b"http://" + authority + b"/bucket/some/key?versionId=v1"
    client = send(relay, absolute(signed, target, host))
    (call,) = relay.upstream.calls
    assert call.request.start_line == "GET /bucket/some/key?versionId=v1 HTTP/1.1"
    assert call.request.header("host") == "upstream.test:9000"
    call.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    response = answer(client)
    assert response.status == 200 and response.body == b"hi"
    (record,) = access
    assert (record["operation"], record["bucket"], record["status"]) == ("GetObject", "bucket", 200)


def test_absolute_form_without_a_path_is_the_root() -> None:
    relay = Relay()
    client = send(relay, absolute(relay.sign("GET", "/"), b"http://relay.test", HOST.encode()))
    (call,) = relay.upstream.calls
    assert call.request.start_line == "GET / HTTP/1.1"
    call.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert answer(client).status == 200


def test_absolute_form_authority_is_what_admission_checks(access: list[dict[str, Any]]) -> None:
    """With no Host header the authority is the Host: allowed_hostnames applies to it."""
    relay = Relay(NAMED)
    signed = relay.sign("GET", "/bucket/key")
    response = answer(send(relay, absolute(signed, b"http://elsewhere.test/bucket/key")))
    assert response.status == 400 and s3_code(response) == "InvalidArgument"
    (record,) = access
    assert "elsewhere.test" in record["reason"]
    assert relay.upstream.calls == []


@pytest.mark.parametrize(
    "target, host",
    [
        (b"http://elsewhere.test/bucket/key", HOST.encode()),  # Host allowed, authority not
        (b"http://relay.test/bucket/key", b"elsewhere.test"),
        # Virtual-host style by one, path style by the other.
        (b"http://bucket.relay.test/key", HOST.encode()),
        (b"http://relay.test:80/bucket/key", HOST.encode()),
    ],
)
def test_absolute_form_with_another_host_is_refused(
    target: bytes, host: bytes, access: list[dict[str, Any]]
) -> None:
    relay = Relay()
    signed = relay.sign("GET", "/bucket/key")
    response = answer(send(relay, absolute(signed, target, host)))
    assert response.status == 400 and s3_code(response) == "InvalidRequest"
    (record,) = access
    assert record["error_code"] == "InvalidRequest"
    assert "authority" in record["reason"] and host.decode() in record["reason"]
    assert relay.upstream.calls == []


def test_absolute_form_with_two_hosts_is_refused() -> None:
    relay = Relay()
    raw = (b"GET http://relay.test/bucket/key HTTP/1.1\r\n"
           b"Host: relay.test\r\nHost: relay.test\r\n\r\n")
    response = answer(send(relay, raw))
    assert response.status == 400 and s3_code(response) == "InvalidRequest"


def test_absolute_form_from_outside_allowed_networks_is_refused_by_admission(
    access: list[dict[str, Any]]
) -> None:
    relay = Relay(OUTSIDE)
    raw = b"GET http://elsewhere.test/bucket/key HTTP/1.1\r\nHost: relay.test\r\n\r\n"
    response = answer(send(relay, raw))
    assert response.status == 403 and s3_code(response) == "AccessDenied"
    (record,) = access
    assert "allowed_networks" in record["reason"]


@pytest.mark.parametrize(
    "target",
    [
        b"ftp://relay.test/bucket/key",
        b"http://user:pass@relay.test/bucket/key",
        b"http:///bucket/key",
        b"http://relay.test/bucket/key#fragment",
        b"http:relay.test/bucket/key",
    ],
)
def test_unusable_absolute_forms_are_invalid_uri(
    target: bytes, access: list[dict[str, Any]]
) -> None:
    relay = Relay()
    raw = b"GET " + target + b" HTTP/1.1\r\nHost: relay.test\r\n\r\n"
    response = answer(send(relay, raw))
    assert response.status == 400 and s3_code(response) == "InvalidURI"
    (record,) = access
    assert record["error_code"] == "InvalidURI"
    assert "absolute-form" in record["reason"] or "neither" in record["reason"]
    assert relay.upstream.calls == []


# Authority-form and CONNECT.


def test_connect_is_refused_and_the_connection_closed(access: list[dict[str, Any]]) -> None:
    relay = Relay()
    client = send(relay, b"CONNECT upstream.test:9000 HTTP/1.1\r\nHost: upstream.test:9000\r\n\r\n")
    response = answer(client)
    assert response.status == 405 and s3_code(response) == "MethodNotAllowed"
    assert response.header("allow") == "GET, HEAD, PUT, POST, DELETE"
    assert response.header("connection") == "close"
    assert client.transport.disconnecting
    (record,) = access
    assert (record["method"], record["status"]) == ("CONNECT", 405)
    assert "CONNECT" in record["reason"]
    assert relay.upstream.calls == []


def test_connect_from_outside_allowed_networks_is_refused_by_admission(
    access: list[dict[str, Any]]
) -> None:
    relay = Relay(OUTSIDE)
    client = send(relay, b"CONNECT upstream.test:9000 HTTP/1.1\r\nHost: upstream.test:9000\r\n\r\n")
    response = answer(client)
    assert response.status == 403 and s3_code(response) == "AccessDenied"
    assert client.transport.disconnecting
    (record,) = access
    assert record["method"] == "CONNECT" and "allowed_networks" in record["reason"]


def test_authority_form_with_another_method_is_invalid_uri(access: list[dict[str, Any]]) -> None:
    relay = Relay()
    response = answer(send(relay, b"GET relay.test:443 HTTP/1.1\r\nHost: relay.test\r\n\r\n"))
    assert response.status == 400 and s3_code(response) == "InvalidURI"
    (record,) = access
    assert "neither origin-form" in record["reason"]


# The forms themselves (pure).


@pytest.mark.parametrize(
    "method, target, host, form, uri, new_host, code",
    [
        (b"GET", b"/b/k?x=1", [b"h"], ORIGIN, b"/b/k?x=1", None, None),
        (b"GET", b"HTTP://H.test:8080?x", [b"h.test:8080"], ABSOLUTE, b"/?x", None, None),
        (b"GET", b"https://h.test/b/k", None, ABSOLUTE, b"/b/k", b"h.test", None),
        (b"GET", b"http://[::1]:9000/b", [b"[::1]:9000"], ABSOLUTE, b"/b", None, None),
        (b"GET", b"http://h.test/b", [b"g.test"], ABSOLUTE, b"/b", None, "InvalidRequest"),
        (b"OPTIONS", b"*", [b"h"], ASTERISK, b"*", None, "InvalidURI"),
        (b"GET", b"h.test:443", [b"h"], AUTHORITY, b"h.test:443", None, "InvalidURI"),
        (b"CONNECT", b"h.test:443", [b"h"], AUTHORITY, b"h.test:443", None, "MethodNotAllowed"),
        (b"CONNECT", b"/b/k", [b"h"], AUTHORITY, b"/b/k", None, "MethodNotAllowed"),
    ],
)
def test_read_target(
    method: bytes, target: bytes, host: list[bytes] | None, form: str, uri: bytes,
    new_host: bytes | None, code: str | None,
) -> None:
    read = read_target(method, target, host)
    assert (read.form, read.uri, read.host) == (form, uri, new_host)
    assert (read.refusal.code if read.refusal is not None else None) == code


# No response names the server software.


def test_relayed_and_refused_responses_name_no_server() -> None:
    relay = Relay()
    client = send(relay, relay.sign("GET", "/bucket/key"))
    (call,) = relay.upstream.calls
    call.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert answer(client).status == 200
    assert answer(send(relay, relay.sign("GET", "/bucket/key", secret="wrong"))).status == 403
    # Refused before dispatch, by the channel.
    malformed = send(relay, b"GET /bucket/key HTTP/1.1\r\nBad Header\r\n\r\n")
    assert answer(malformed).status == 400


def serve(site: Any, raw: bytes) -> Message:
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    (response,) = parse_messages(transport.value())
    return response


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200),
        (b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", 405),
        # Not Twisted's own 200: ``*`` is a path like any other, and no endpoint.
        (b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404),
        (b"GET * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404),
    ],
)
def test_management_responses_name_no_server(raw: bytes, status: int) -> None:
    site = make_management_site(
        RelayMetrics(process_metrics=False), Readiness(), MemoryReactorClock()
    )
    response = serve(site, raw)
    assert response.status == status, response.head
    assert response.header("server") is None, response.head
    assert response.header("date") is not None
    assert response.header("content-type") == "application/json"
