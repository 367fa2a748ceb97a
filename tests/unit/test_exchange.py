"""The request path end to end, in memory: client bytes in, upstream bytes out, and back.

The integration tier runs the relay as a process against a real S3 server
over sockets: true, slow, and unable to make an upstream stall for exactly 60
seconds, die after exactly ten body bytes, or close a pooled connection just
as a request goes out.  This tier drives the relay's own Site, channel,
resource and Exchange (``tests.unit.memory``) with Twisted's real HTTP client
protocol as the upstream side and one fake clock, so each of those moments
is one line of a test, and each test takes milliseconds.  No process, socket,
boto3 or moto: botocore only signs, as a client would.
"""

from __future__ import annotations

import datetime
import re

import botocore.auth  # type: ignore[import-untyped]
import pytest
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure

from s3relay.http.request import DRAIN_LIMIT
from tests.unit.memory import (
    CLIENT_KEY,
    CLIENT_SECRET,
    UPSTREAM_KEY,
    UPSTREAM_SECRET,
    Client,
    Message,
    Relay,
    config_text,
    sign,
)
from tests.unit.oracle import signing_at

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def s3_error(message: Message) -> tuple[str, str]:
    """(Code, RequestId) of an S3 XML error response."""
    assert message.header("content-type") == "application/xml", message.head
    text = message.body.decode("utf-8")
    code = re.search(r"<Code>(.*?)</Code>", text)
    request_id = re.search(r"<RequestId>(.*?)</RequestId>", text)
    assert code is not None and request_id is not None, text
    return code.group(1), request_id.group(1)


def only_response(client: Client) -> Message:
    responses = client.responses()
    assert len(responses) == 1, client.received()
    return responses[0]


def upstream_signature_valid(request: Message, method: str, url: str) -> bool:
    """Whether ``request`` carries a SigV4 signature botocore computes for the upstream key."""
    signed = re.search(r"SignedHeaders=([^,]+)", request.header("authorization") or "")
    assert signed is not None
    headers = {name: request.headers[name][0] for name in signed.group(1).split(";")}
    when = datetime.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    check = AWSRequest(method=method, url=url, data=request.body, headers=headers)
    with signing_at(when):
        botocore.auth.S3SigV4Auth(
            Credentials(UPSTREAM_KEY, UPSTREAM_SECRET), "s3", "us-east-1"
        ).add_auth(check)
    return bool(check.headers["Authorization"] == request.header("authorization"))


# 1. The happy path.


def test_signed_get_is_re_signed_and_the_answer_relayed() -> None:
    relay = Relay()
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/some/key.txt", {"Range": "bytes=0-4"}))
    assert client.received() == b""  # waiting for the upstream
    (call,) = relay.upstream.calls
    sent = call.request
    assert sent.start_line == "GET /bucket/some/key.txt HTTP/1.1"
    assert sent.header("host") == "upstream.test:9000"
    assert sent.header("range") == "bytes=0-4"
    authorization = sent.header("authorization") or ""
    assert f"Credential={UPSTREAM_KEY}/20260102/us-east-1/s3/aws4_request" in authorization
    assert CLIENT_KEY not in call.transport.value().decode("latin-1")
    assert upstream_signature_valid(sent, "GET", "http://upstream.test:9000/bucket/some/key.txt")

    call.respond(
        b"HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\nETag: \"abc\"\r\n"
        b"Content-Type: text/plain\r\nx-amz-request-id: UPSTREAMID\r\n"
        b"x-amz-meta-Colour: blue\r\n\r\nhello"
    )
    response = only_response(client)
    assert response.status == 206 and response.body == b"hello" and response.complete
    assert response.header("etag") == '"abc"'
    assert response.header("content-type") == "text/plain"
    assert response.header("x-amz-request-id") == "UPSTREAMID"
    assert b"\r\nx-amz-meta-colour: blue\r\n" in response.head  # lower case, as S3 writes it
    assert re.fullmatch(r"[0-9A-F]{16}", response.header("x-s3relay-request-id") or "")
    assert not client.transport.disconnecting  # keep-alive


def test_signed_put_streams_its_body_upstream() -> None:
    relay = Relay()
    client = relay.connect()
    client.send(relay.sign("PUT", "/bucket/key", {"Content-Type": "text/plain"}, b"0123456789"))
    (call,) = relay.upstream.calls
    sent = call.request
    assert sent.start_line == "PUT /bucket/key HTTP/1.1"
    assert sent.body == b"0123456789" and sent.complete
    assert sent.header("content-type") == "text/plain"
    assert upstream_signature_valid(sent, "PUT", "http://upstream.test:9000/bucket/key")
    call.respond(b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n")
    response = only_response(client)
    assert response.status == 200 and response.header("etag") == '"e"'


# 2. Refusals reach no upstream.


@pytest.mark.parametrize("method, body", [("GET", b""), ("PUT", b"0123456789")])
def test_wrong_signature_is_refused_before_the_upstream(method: str, body: bytes) -> None:
    relay = Relay()
    client = relay.connect()
    client.send(relay.sign(method, "/bucket/key", body=body, secret=CLIENT_SECRET + "x"))
    response = only_response(client)
    assert response.status == 403
    code, request_id = s3_error(response)
    assert code == "SignatureDoesNotMatch"
    assert request_id == response.header("x-amz-request-id")
    assert relay.upstream.calls == []


def test_stale_signature_is_refused() -> None:
    relay = Relay()
    client = relay.connect()
    client.send(sign("GET", "/bucket/key", when=relay.clock.seconds() - 16 * 60))
    response = only_response(client)
    assert response.status == 403 and s3_error(response)[0] == "RequestTimeTooSkewed"
    assert relay.upstream.calls == []


# 3. Expect: 100-continue is the relay's to answer, after authentication.


def split_head(raw: bytes) -> tuple[bytes, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", body


def test_accepted_put_hears_100_continue_before_the_response() -> None:
    relay = Relay()
    client = relay.connect()
    head, body = split_head(relay.sign("PUT", "/bucket/key", {"Expect": "100-continue"},
                                       b"0123456789"))
    client.send(head)
    assert client.received() == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.send(body)
    (call,) = relay.upstream.calls
    assert call.request.body == b"0123456789"
    assert call.request.header("expect") is None  # the relay's own business
    call.respond(OK)
    continue_, final = client.responses()
    assert continue_.start_line == "HTTP/1.1 100 Continue"
    assert final.status == 200 and final.complete


def test_refused_put_never_hears_100_continue() -> None:
    relay = Relay()
    client = relay.connect()
    head, _ = split_head(relay.sign("PUT", "/bucket/key", {"Expect": "100-continue"},
                                    b"0123456789", secret="wrong"))
    client.send(head)
    assert b"100 Continue" not in client.received()
    response = only_response(client)
    assert response.status == 403 and s3_error(response)[0] == "SignatureDoesNotMatch"
    # The client may never send the body: the connection must not wait for it.
    assert client.transport.disconnecting
    assert relay.upstream.calls == []


def test_refused_put_announces_that_it_closes() -> None:
    relay = Relay()
    client = relay.connect()
    head, _ = split_head(relay.sign("PUT", "/bucket/key", {"Expect": "100-continue"},
                                    b"0123456789", secret="wrong"))
    client.send(head)
    response = only_response(client)
    assert client.transport.disconnecting
    assert response.header("connection") == "close"


# 4. The upstream answers before the client finished its body.


def test_early_answer_drains_a_short_body_and_keeps_the_connection() -> None:
    relay = Relay()
    client = relay.connect()
    raw = relay.sign("PUT", "/bucket/key", body=b"0123456789")
    client.send(raw[:-5])
    (call,) = relay.upstream.calls
    call.respond(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno!")
    response = only_response(client)
    assert response.status == 403 and response.body == b"no!" and response.complete
    client.send(raw[-5:])  # the rest of the body: read and dropped, no crash
    assert not client.transport.disconnecting
    assert call.transport.disconnecting  # Twisted closes an upstream connection it could not finish
    client.send(relay.sign("GET", "/bucket/next"))
    assert len(relay.upstream.calls) == 2
    relay.upstream.calls[1].respond(OK)
    assert [r.status for r in client.responses()] == [403, 200]


@pytest.mark.parametrize("sent, drained", [(10, True), (9, False)])
def test_early_answer_drains_up_to_drain_limit_then_closes(sent: int, drained: bool) -> None:
    """A remainder of DRAIN_LIMIT bytes is read and dropped; one byte more closes."""
    relay = Relay()
    client = relay.connect()
    length = DRAIN_LIMIT + 10
    head, body = split_head(relay.sign("PUT", "/bucket/key", body=b"x" * length))
    client.send(head + body[:sent])
    (call,) = relay.upstream.calls
    call.respond(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno!")
    response = only_response(client)
    assert response.status == 403 and response.body == b"no!" and response.complete
    assert client.transport.disconnecting is not drained and not client.aborted
    client.send(body[sent:])  # the rest: dropped either way, no crash
    assert len(relay.upstream.calls) == 1
    client.send(relay.sign("GET", "/bucket/next"))
    assert len(relay.upstream.calls) == (2 if drained else 1)


# 5. A pooled connection that died as the request went out is retried, once.


def test_request_on_a_stale_connection_is_sent_again() -> None:
    relay = Relay()
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key"))
    relay.upstream.calls[0].lose(ConnectionDone())  # closed by the upstream, unanswered
    assert client.received() == b""
    assert len(relay.upstream.calls) == 2
    second = relay.upstream.calls[1]
    assert second.request.start_line == "GET /bucket/key HTTP/1.1"
    second.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    response = only_response(client)
    assert response.status == 200 and response.body == b"ok"


def test_put_whose_body_had_not_left_is_sent_again_with_all_of_it() -> None:
    relay = Relay()
    client = relay.connect()
    head, body = split_head(relay.sign("PUT", "/bucket/key", body=b"0123456789"))
    client.send(head)
    relay.upstream.calls[0].lose(ConnectionLost())
    client.send(body)
    assert len(relay.upstream.calls) == 2
    second = relay.upstream.calls[1]
    assert second.request.body == b"0123456789" and second.request.complete
    second.respond(OK)
    assert only_response(client).status == 200


def test_second_stale_connection_is_a_502() -> None:
    relay = Relay()
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key"))
    relay.upstream.calls[0].lose(ConnectionDone())
    relay.upstream.calls[1].lose(ConnectionDone())
    assert len(relay.upstream.calls) == 2
    response = only_response(client)
    assert response.status == 502
    code, request_id = s3_error(response)
    assert code == "InternalError" and request_id == response.header("x-amz-request-id")


def test_no_retry_once_body_bytes_left() -> None:
    relay = Relay()
    client = relay.connect()
    raw = relay.sign("PUT", "/bucket/key", body=b"0123456789")
    client.send(raw[:-4])
    client.send(raw[-4:-2])  # releases the held piece: body bytes went out
    (call,) = relay.upstream.calls
    assert call.transport.value().endswith(b"012345")
    call.lose(ConnectionLost())
    assert len(relay.upstream.calls) == 1
    response = only_response(client)
    assert response.status == 502 and s3_error(response)[0] == "InternalError"


# 6. Hop-by-hop headers stop at the relay, both ways.


def test_fixed_hop_by_hop_response_headers_do_not_reach_the_client() -> None:
    relay = Relay()
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key"))
    relay.upstream.calls[0].respond(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=99\r\n"
        b"Proxy-Authenticate: Basic realm=up\r\nTrailer: X-Checksum\r\nUpgrade: h2c\r\n"
        b"Proxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\nok"
    )
    response = only_response(client)
    assert response.body == b"ok" and response.header("x-kept") == "yes"
    for name in ("keep-alive", "proxy-authenticate", "trailer", "upgrade", "proxy-connection",
                 "transfer-encoding"):
        assert name not in response.headers, name


def test_headers_the_upstream_connection_header_names_do_not_reach_the_client() -> None:
    relay = Relay()
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key"))
    relay.upstream.calls[0].respond(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-private\r\n"
        b"X-Private: 1\r\n\r\nok"
    )
    response = only_response(client)
    assert response.body == b"ok"
    assert "x-private" not in response.headers


def test_headers_the_client_connection_header_names_do_not_go_upstream() -> None:
    relay = Relay()
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key", {
        "Connection": "keep-alive, x-secret", "X-Secret": "1", "Keep-Alive": "300",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==", "TE": "trailers", "X-Public": "2",
    }))
    (call,) = relay.upstream.calls
    sent = call.request
    assert sent.header("x-public") == "2"
    for name in ("x-secret", "keep-alive", "proxy-authorization", "te"):
        assert name not in sent.headers, name
    assert "x-secret" not in (sent.header("authorization") or "")


# 7. An upstream that never answers.


def test_first_byte_timeout_is_a_503_and_cancels_the_upstream_request() -> None:
    relay = Relay(config_text(server="first_byte_timeout = 7"))
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key"))
    (call,) = relay.upstream.calls
    relay.clock.advance(6.9)
    assert client.received() == b"" and not call.aborted
    relay.clock.advance(0.2)
    response = only_response(client)
    assert response.status == 503
    code, request_id = s3_error(response)
    assert code == "ServiceUnavailable" and request_id == response.header("x-amz-request-id")
    assert call.aborted
    assert not client.transport.disconnecting  # the request was complete: keep-alive
    call.respond(OK)  # too late: nothing more reaches the client
    assert len(client.responses()) == 1


def test_first_byte_timeout_counts_from_the_end_of_the_body() -> None:
    relay = Relay(config_text(server="first_byte_timeout = 7"))
    client = relay.connect()
    raw = relay.sign("PUT", "/bucket/key", body=b"0123456789")
    client.send(raw[:-5])
    (call,) = relay.upstream.calls  # the upstream request starts with the headers
    relay.clock.advance(10)  # the body is slow (within idle_timeout): not the upstream's fault
    client.send(raw[-5:])
    assert call.request.body == b"0123456789"
    relay.clock.advance(6.9)
    assert client.received() == b"" and not call.aborted
    relay.clock.advance(0.2)
    assert only_response(client).status == 503 and call.aborted


def test_client_gone_while_waiting_cancels_the_upstream_request() -> None:
    relay = Relay()
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key"))
    (call,) = relay.upstream.calls
    client.channel.connectionLost(Failure(ConnectionLost()))
    assert call.aborted


# 8. A response cut short must look cut.


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n",
], ids=["content-length", "chunked"])
def test_response_cut_mid_body_aborts_the_client_connection(head: bytes) -> None:
    relay = Relay()
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key"))
    (call,) = relay.upstream.calls
    call.respond(head + b"0123456789")
    assert client.responses()[0].body == b"0123456789" and not client.aborted
    call.lose(ConnectionLost())
    assert client.aborted
    response = only_response(client)
    assert response.status == 200 and not response.complete
    assert b"<Error>" not in client.received()


def test_client_gone_mid_response_stops_the_upstream() -> None:
    relay = Relay()
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/key"))
    (call,) = relay.upstream.calls
    call.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    assert call.transport.producerState == "producing"
    client.channel.connectionLost(Failure(ConnectionLost()))
    assert call.transport.producerState == "stopped"


# 9. Rate limits answer SlowDown with Retry-After.


def test_rate_limited_request_gets_slow_down_with_retry_after() -> None:
    relay = Relay(config_text(client="rate = 0.5\nburst = 1"))
    client = relay.connect()
    client.send(relay.sign("GET", "/bucket/a"))
    relay.upstream.calls[0].respond(OK)
    client.send(relay.sign("GET", "/bucket/b"))
    first, second = client.responses()
    assert first.status == 200
    assert second.status == 503
    code, request_id = s3_error(second)
    assert code == "SlowDown" and request_id == second.header("x-amz-request-id")
    assert second.header("retry-after") == "2"
    assert len(relay.upstream.calls) == 1
    relay.clock.advance(2)
    client.send(relay.sign("GET", "/bucket/c"))
    assert len(relay.upstream.calls) == 2
