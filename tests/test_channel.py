"""The header-stage takeover, driven byte by byte over an in-memory transport.

These pin the Twisted behaviour the relay depends on (DESIGN.md §1.9): if an
upgrade of Twisted changes the hook order, they fail here first.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from s3relay.channel import DRAIN_LIMIT, RelayChannel, RelayRequest


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
    site.protocol = RelayChannel
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


def test_early_response_with_long_remainder_closes_without_crashing() -> None:
    probe = Probe()
    probe.accept = False
    channel, transport = connect(probe)
    length = DRAIN_LIMIT + 10
    channel.dataReceived(b"PUT /b/k HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % length)
    request = probe.requests[0]
    request.setResponseCode(403)
    request.setHeader(b"content-length", b"0")
    request.finish()
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
