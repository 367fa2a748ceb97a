"""The header-stage takeover, driven byte by byte over an in-memory transport.

These pin the Twisted behaviour the relay depends on (DESIGN.md §1.9): if an
upgrade of Twisted changes the hook order, they fail here first.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from s3relay.http.channel import LINGER_SECONDS, RelayChannel
from s3relay.http.request import DRAIN_LIMIT, RelayRequest


class Recorder:
    """A body receiver that remembers what it was given."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.complete = False

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def bodyComplete(self) -> None:
        self.complete = True


class Probe(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[RelayRequest] = []
        self.receiver = Recorder()
        self.accept = True

    def render(self, request: Any) -> Any:
        # Runs at the end of the headers: nothing of the body may be there yet.
        assert request.bodyReceived == 0
        self.requests.append(request)
        if self.accept:
            request.bodyReceiver = self.receiver
            request.sendContinue()
        return NOT_DONE_YET


def connect(resource: Resource) -> tuple[RelayChannel, StringTransport]:
    site = Site(resource, reactor=MemoryReactorClock())
    site.requestFactory = RelayRequest
    site.protocol = RelayChannel  # type: ignore[method-assign, assignment]
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


HEAD = (
    b"PUT /bucket/key?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n"
    b"Expect: 100-continue\r\n\r\n"
)


def test_render_runs_before_the_body_and_no_automatic_continue() -> None:
    probe = Probe()
    probe.accept = False
    channel, transport = connect(probe)
    channel.dataReceived(HEAD)
    assert len(probe.requests) == 1
    request = probe.requests[0]
    assert request.method == b"PUT" and request.uri == b"/bucket/key?x=1"
    assert request.path == b"/bucket/key"
    assert request.expectContinue
    assert request.requestHeaders.getRawHeaders(b"expect") == [b"100-continue"]
    assert transport.value() == b""  # Twisted sent no 100 Continue on its own


def test_accepted_body_streams_to_the_receiver_after_continue() -> None:
    probe = Probe()
    channel, transport = connect(probe)
    channel.dataReceived(HEAD)
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    channel.dataReceived(b"01234")
    assert probe.receiver.chunks == [b"01234"] and not probe.receiver.complete
    channel.dataReceived(b"56789")
    assert b"".join(probe.receiver.chunks) == b"0123456789"
    assert probe.receiver.complete and probe.requests[0].bodyDone
    request = probe.requests[0]
    request.setResponseCode(200)
    request.setHeader(b"content-length", b"0")
    request.finish()
    assert transport.value().endswith(b"\r\n\r\n")
    assert b"200" in transport.value() and not transport.disconnecting


def test_early_response_with_short_remainder_drains_and_keeps_connection() -> None:
    probe = Probe()
    probe.accept = False
    channel, transport = connect(probe)
    channel.dataReceived(HEAD.replace(b"Expect: 100-continue\r\n", b""))
    request = probe.requests[0]
    request.setResponseCode(403)
    request.setHeader(b"content-length", b"0")
    request.finish()
    assert not request.finished  # waits for the rest of the body
    channel.dataReceived(b"0123456789")
    assert request.finished and not transport.disconnecting
    assert probe.receiver.chunks == []  # a refused body is discarded
    channel.dataReceived(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    assert len(probe.requests) == 2


def refuse_before_a_long_body(probe: Probe, channel: RelayChannel) -> tuple[Any, int]:
    """A PUT head whose body is over DRAIN_LIMIT, answered 403 at once: (request, length)."""
    probe.accept = False
    length = DRAIN_LIMIT + 10
    channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % length)
    request = probe.requests[0]
    request.setResponseCode(403)
    request.setHeader(b"content-length", b"0")
    request.finish()
    return request, length


def test_early_response_with_long_remainder_closes_without_crashing() -> None:
    probe = Probe()
    channel, transport = connect(probe)
    request, length = refuse_before_a_long_body(probe, channel)
    assert request.finished and transport.disconnecting
    assert b"connection: close" in transport.value().lower()
    # More body bytes after the response must not reach Twisted's request queue.
    channel.dataReceived(b"x" * length)


def test_get_refused_while_rendering_does_not_crash() -> None:
    """A synchronous answer to a body-less request (auth failure) is the common case."""

    class Refuse(Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.setResponseCode(403)
            request.setHeader(b"content-length", b"2")
            request.write(b"no")
            request.finish()
            return NOT_DONE_YET  # type: ignore[return-value]

    channel, transport = connect(Refuse())
    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    assert transport.value().count(b"403") == 2
    assert not transport.disconnecting


def test_paused_body_stays_paused_when_response_writes_drain() -> None:
    probe = Probe()
    channel, transport = connect(probe)
    channel.dataReceived(HEAD)
    probe.requests[0].pauseBody()
    assert transport.producerState == "paused"
    channel.pauseProducing()
    channel.resumeProducing()
    assert transport.producerState == "paused"
    probe.requests[0].resumeBody()
    assert transport.producerState == "producing"


def test_body_that_ended_paused_does_not_stop_the_next_request() -> None:
    """The upstream paused the body as its last bytes went out, and never
    resumed it (the body was complete).  The response then filled the send
    buffer; when it drained, reading must go on, or the next request on the
    connection would sit unread until idle_timeout (found by bench/soak.py)."""
    probe = Probe()
    channel, transport = connect(probe)
    channel.dataReceived(HEAD + b"0123456789")
    request = probe.requests[0]
    request.pauseBody()
    assert probe.receiver.complete
    request.setResponseCode(200)
    request.write(b"x")
    channel.pauseProducing()  # the response fills the send buffer
    request.finish()
    channel.resumeProducing()  # ... and drains
    assert transport.producerState == "producing"
    channel.dataReceived(b"GET /bucket/next HTTP/1.1\r\nHost: h\r\n\r\n")
    assert len(probe.requests) == 2


def test_refused_before_continue_closes_instead_of_waiting_for_the_body() -> None:
    """A client refused while waiting for 100 Continue sends no body: never read
    its next request as one."""
    probe = Probe()
    probe.accept = False
    channel, transport = connect(probe)
    channel.dataReceived(HEAD)
    request = probe.requests[0]
    request.setResponseCode(403)
    request.setHeader(b"content-length", b"0")
    request.finish()
    assert request.finished and transport.disconnecting
    assert b"100 Continue" not in transport.value()
    assert b"connection: close" in transport.value().lower()


# Limits and timers (s3relay.http.limits): every timer driven by a fake clock.

from twisted.python.failure import Failure  # noqa: E402

from s3relay.http.limits import Limits  # noqa: E402
from s3relay.s3.errors import S3Error  # noqa: E402

LIMITS = Limits(
    header_timeout=5.0,
    first_byte_timeout=7.0,
    max_header_size=1024,
    max_headers=8,
    max_url_length=64,
)
IDLE = 3.0


def connect_limited(
    resource: Resource, limits: Limits = LIMITS, transport: StringTransport | None = None
) -> tuple[RelayChannel, StringTransport, MemoryReactorClock]:
    clock = MemoryReactorClock()
    site = Site(resource, reactor=clock)
    site.requestFactory = RelayRequest
    site.protocol = RelayChannel  # type: ignore[method-assign, assignment]
    site.timeOut = IDLE
    channel = site.buildProtocol(None)
    channel.limits = limits
    transport = transport or StringTransport()
    channel.makeConnection(transport)
    return channel, transport, clock


class HalfClosingTransport(StringTransport):
    """Like a TCP connection, it can close its writing side alone."""

    writeLost = False

    def loseWriteConnection(self) -> None:
        self.writeLost = True


def test_close_with_the_body_still_coming_lingers_reading() -> None:
    """Closing with request bytes unread would reset the connection, and the
    client still sending them could lose the answer (a broken pipe)."""
    probe = Probe()
    channel, transport, clock = connect_limited(probe, transport=HalfClosingTransport())
    _, length = refuse_before_a_long_body(probe, channel)
    assert transport.value().startswith(b"HTTP/1.1 403")
    assert isinstance(transport, HalfClosingTransport) and transport.writeLost
    assert not transport.disconnecting and transport.producerState == "producing"
    channel.dataReceived(b"x" * length)  # read and dropped
    assert len(probe.requests) == 1
    clock.advance(LINGER_SECONDS)
    assert transport.disconnecting


def test_refused_head_lingers_and_parses_nothing_after_it() -> None:
    channel, transport, _ = connect_limited(Probe(), transport=HalfClosingTransport())
    channel.dataReceived(b"garbage\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert transport.value().count(b"HTTP/1.1") == 1
    assert isinstance(transport, HalfClosingTransport) and transport.writeLost


def test_idle_close_does_not_linger() -> None:
    channel, transport, clock = connect_limited(Probe(), transport=HalfClosingTransport())
    clock.advance(IDLE)
    assert transport.disconnecting
    assert isinstance(transport, HalfClosingTransport) and not transport.writeLost


def s3_code(transport: StringTransport) -> str:
    text = transport.value().decode("latin-1")
    assert "application/xml" in text.lower(), text
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0]


def test_slow_head_gets_request_timeout_after_header_timeout() -> None:
    probe = Probe()
    channel, transport, clock = connect_limited(probe)
    for byte in b"GET /a HTTP/1.1\r\nHost:":
        channel.dataReceived(bytes([byte]))
        clock.advance(0.2)  # moving, so the idle timer never fires
        if transport.disconnecting:
            break
    assert not transport.disconnecting  # 4.4 s: still within header_timeout
    clock.advance(1.0)
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert s3_code(transport) == "RequestTimeout"
    assert transport.disconnecting and probe.requests == []


def test_silent_keep_alive_connection_closes_after_idle_timeout() -> None:
    channel, transport, clock = connect_limited(Probe())
    clock.advance(IDLE - 0.1)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting and transport.value() == b""


def test_client_that_stops_sending_its_body_gets_request_timeout() -> None:
    probe = Probe()
    channel, transport, clock = connect_limited(probe)
    channel.dataReceived(HEAD)
    transport.clear()
    for _ in range(5):  # a byte every 2 s: moving, never idle
        clock.advance(2)
        channel.dataReceived(b"x")
    assert not transport.disconnecting
    clock.advance(IDLE + 0.1)
    assert s3_code(transport) == "RequestTimeout" and transport.disconnecting


def test_body_paused_for_the_upstream_is_not_client_idleness() -> None:
    """While the upstream drains the upload slowly, the client is never blamed;
    an upstream that stops draining is."""
    probe = Probe()
    channel, transport, clock = connect_limited(probe)
    channel.dataReceived(HEAD)
    request = probe.requests[0]
    request.pauseBody()
    for _ in range(5):  # the upstream takes a little every 2 s
        clock.advance(2)
        request.resumeBody()
        request.pauseBody()
    assert not transport.disconnecting
    transport.clear()
    clock.advance(IDLE + 0.1)
    assert s3_code(transport) == "ServiceUnavailable" and transport.disconnecting


def test_waiting_for_the_upstream_holds_the_idle_timer() -> None:
    """Waiting for the upstream's answer is the exchange's first_byte_timeout,
    not idleness: the channel's idle timer holds until the upstream answers."""
    probe = Probe()
    channel, transport, clock = connect_limited(probe)
    channel.dataReceived(b"GET /b/k HTTP/1.1\r\nHost: h\r\n\r\n")
    request = probe.requests[0]
    waiting: list[float] = []
    request.awaitUpstream(lambda: waiting.append(clock.seconds()))
    assert waiting == [0.0]  # the body is complete: the wait starts now
    clock.advance(10 * IDLE)
    assert transport.value() == b""
    request.upstreamAnswered()
    clock.advance(IDLE + 0.1)  # no response under way: idle again, cut
    assert s3_code(transport) == "ServiceUnavailable"


def test_the_upstream_wait_starts_when_the_body_is_complete() -> None:
    probe = Probe()
    channel, transport, clock = connect_limited(probe)
    channel.dataReceived(HEAD)
    request = probe.requests[0]
    waiting: list[float] = []
    request.awaitUpstream(lambda: waiting.append(clock.seconds()))
    for _ in range(6):  # the body trickles in for 12 s
        clock.advance(2)
        channel.dataReceived(b"x")
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert waiting == []
    channel.dataReceived(b"xxxx")
    assert waiting == [12.0]
    clock.advance(10 * IDLE)
    assert b"503" not in transport.value()
    request.upstreamAnswered()  # headers arrived: the idle timer is back
    request.setResponseCode(200)
    request.setHeader(b"content-length", b"100")
    request.write(b"x" * 10)
    for _ in range(5):  # a slow but moving response is never cut
        clock.advance(2)
        request.write(b"x")
    assert not transport.disconnecting
    clock.advance(IDLE + 0.1)  # the response stalls mid-body: cut, not finished
    assert transport.disconnected or transport.disconnecting


def test_stall_mid_response_aborts_rather_than_ending_the_body() -> None:
    probe = Probe()
    channel, transport, clock = connect_limited(probe)
    channel.dataReceived(b"GET /b/k HTTP/1.1\r\nHost: h\r\n\r\n")
    request = probe.requests[0]
    request.setResponseCode(200)
    request.setHeader(b"content-length", b"100")
    request.write(b"x" * 10)
    clock.advance(IDLE + 0.1)
    assert transport.disconnecting
    assert b"<Error>" not in transport.value()
    assert not request.finished


def test_fail_handler_answers_channel_errors() -> None:
    probe = Probe()
    channel, transport, clock = connect_limited(probe)
    channel.dataReceived(HEAD)
    seen: list[S3Error] = []
    probe.requests[0].failHandler = seen.append
    clock.advance(IDLE + 0.1)
    assert [e.code for e in seen] == ["RequestTimeout"]
    assert transport.disconnecting


@pytest.mark.parametrize(
    "data, code",
    [
        (b"GARBAGE\r\n\r\n", "InvalidRequest"),
        (b"GET /a HTTP/1.1\r\nBad Name: x\r\n\r\n", "InvalidRequest"),
        (b"GET /a HTTP/1.1\r\nX: a\x00b\r\n\r\n", "InvalidRequest"),
        (b"PUT /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
         "InvalidRequest"),
        (b"PUT /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", "InvalidRequest"),
        (b"PUT /a HTTP/1.1\r\nContent-Length: -5\r\n\r\n", "InvalidRequest"),
        (b"PUT /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "InvalidRequest"),
        (b"GET /" + b"a" * 65 + b" HTTP/1.1\r\n\r\n", "RequestHeaderSectionTooLarge"),
        (b"GET /a HTTP/1.1\r\nX: " + b"v" * 1100 + b"\r\n\r\n", "RequestHeaderSectionTooLarge"),
        (b"GET /a HTTP/1.1\r\n" + b"X: v\r\n" * 9 + b"\r\n", "RequestHeaderSectionTooLarge"),
        (b"GET /" + b"a" * 5000, "RequestHeaderSectionTooLarge"),  # no line end at all
    ],
)
def test_malformed_or_oversize_heads_get_s3_errors_not_bare_400s(data: bytes, code: str) -> None:
    """Pins Twisted's private _respondToBadRequestAndDisconnect hook: every
    malformed head must come back as S3 XML, and reach no resource."""
    probe = Probe()
    channel, transport, clock = connect_limited(probe)
    channel.dataReceived(data)
    assert transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert s3_code(transport) == code
    assert b"connection: close" in transport.value().lower()
    assert transport.disconnecting and probe.requests == []
    channel.dataReceived(b"GET /after HTTP/1.1\r\n\r\n")  # ignored, no crash
    assert probe.requests == []


def test_head_within_limits_passes() -> None:
    probe = Probe()
    channel, transport, clock = connect_limited(probe)
    channel.dataReceived(
        b"GET /" + b"a" * 63 + b" HTTP/1.1\r\n" + b"X: v\r\n" * 8 + b"\r\n"
    )
    assert len(probe.requests) == 1 and transport.value() == b""


def test_bad_chunk_size_mid_body_fails_the_dispatched_request() -> None:
    probe = Probe()
    channel, transport, clock = connect_limited(probe)
    channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    seen: list[S3Error] = []
    probe.requests[0].failHandler = seen.append
    channel.dataReceived(b"zz\r\nabc\r\n")
    assert [e.code for e in seen] == ["InvalidRequest"]
    assert transport.disconnecting
    assert b"Bad Request\r\n\r\n" not in transport.value()  # no bare Twisted 400


def test_overloaded_connection_hears_slow_down() -> None:
    probe = Probe()
    channel, transport, clock = connect_limited(probe)
    channel.overloaded = True
    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 503 ")
    assert s3_code(transport) == "SlowDown"
    assert b"\r\nRetry-After: 1\r\n" in transport.value()
    assert transport.disconnecting and probe.requests == []


def test_drain_closes_idle_connections_and_finishes_busy_ones() -> None:
    probe = Probe()
    idle, idle_transport, _ = connect_limited(probe)
    busy, busy_transport, _ = connect_limited(probe)
    busy.dataReceived(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    idle.drain()
    busy.drain()
    assert idle_transport.disconnecting and not busy_transport.disconnecting
    request = probe.requests[0]
    request.setResponseCode(200)
    request.setHeader(b"content-length", b"2")
    request.write(b"ok")
    request.finish()
    assert b"connection: close" in busy_transport.value().lower()
    assert busy_transport.disconnecting
    busy.connectionLost(Failure(ConnectionError()))


def test_a_late_idle_check_lets_pending_bytes_count_first() -> None:
    """When the process itself stood still (the timer ran late), bytes that
    arrived meanwhile are read before the connection is judged idle."""
    probe = Probe()
    channel, transport, clock = connect_limited(probe)
    # A real reactor runs a call scheduled from a timer only after the next
    # round of I/O; the fake clock would run it at once, so hold it here.
    soon: list[Any] = []

    def call_later(delay: float, f: Any, *args: Any) -> Any:
        if delay == 0:
            soon.append(f)
            return None
        return clock.callLater(delay, f, *args)

    channel.callLater = call_later  # type: ignore[method-assign]
    channel.dataReceived(HEAD)
    clock.advance(IDLE + 5)  # the reactor was held up well past the deadline
    assert not transport.disconnecting and len(soon) == 1
    channel.dataReceived(b"x")  # the I/O round: what the socket had meanwhile
    soon.pop()()
    assert not transport.disconnecting
    clock.advance(IDLE + 0.1)  # a real stall is still cut
    assert s3_code(transport) == "RequestTimeout"
