# -*- test-case-name: tests.test_channel -*-
"""An HTTP channel that dispatches a request when its headers arrive.

Stock ``twisted.web`` reads a whole request body (into memory or a temp file)
before a resource sees the request, and answers ``Expect: 100-continue`` on
its own.  A relay must instead decide from the headers, start the upstream
request, and stream the body through with backpressure (Twisted #4688;
DESIGN.md §1).  Every touch of Twisted-private channel state lives in this
module, and ``tests/test_channel.py`` pins the hook order it relies on.
"""

from __future__ import annotations

import io
from typing import Any, Protocol, cast

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http_headers import Headers

from .forward import wire_name
from .metrics import RelayMetrics
from .upstream import tune


class BodyReceiver(Protocol):
    """Where a request's body bytes go once a resource has accepted it."""

    def dataReceived(self, data: bytes) -> None: ...

    def bodyComplete(self) -> None: ...


#: A response that ends while at most this many body bytes are still to come
#: waits for them (and keeps the connection); otherwise the connection closes.
DRAIN_LIMIT = 1024 * 1024


class RelayRequest(server.Request):
    """A request rendered at the end of its headers, with a streamed body."""

    #: Whether the client sent ``Expect: 100-continue`` (answered by the resource).
    expectContinue = False
    #: Set by the resource when it accepts the body; None means discard it.
    bodyReceiver: BodyReceiver | None = None
    #: Whether the whole client body has arrived.
    bodyDone = False
    #: Body bytes the client announced (Content-Length), None when chunked.
    bodyLength: int | None = None
    bodyReceived = 0
    _finishPending = False

    def gotLength(self, length: int | None) -> None:
        # Never open a content file: the body streams through bodyReceiver.
        self.bodyLength = length
        self.content = io.BytesIO()

    def headersReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Set up what ``requestReceived`` would, then render before the body."""
        self.args = {}
        self.method, self.uri = command, path
        self.clientproto = version
        self.path = path.split(b"?", 1)[0]
        self.process()

    def handleContentChunk(self, data: bytes) -> None:
        self.bodyReceived += len(data)
        if self.bodyReceiver is not None:
            self.bodyReceiver.dataReceived(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # The request was dispatched at headersReceived: this only ends the body.
        self.bodyDone = True
        if self.bodyReceiver is not None:
            self.bodyReceiver.bodyComplete()
        if self._finishPending:
            server.Request.finish(self)

    def sendContinue(self) -> None:
        """Answer ``Expect: 100-continue``, once the request is accepted."""
        channel = self.relayChannel
        if self.expectContinue and not self.bodyDone and channel is not None:
            self.expectContinue = False
            channel.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def pauseBody(self) -> None:
        if self.relayChannel is not None:
            self.relayChannel.pauseBody()

    def resumeBody(self) -> None:
        if self.relayChannel is not None:
            self.relayChannel.resumeBody()

    def abortConnection(self) -> None:
        """Cut the client connection: a response that cannot be completed must look cut."""
        if self.relayChannel is not None:
            self.relayChannel.transport.abortConnection()

    @property
    def relayChannel(self) -> RelayChannel | None:
        return cast("RelayChannel | None", self.channel)

    @property
    def finishing(self) -> bool:
        """Whether the response is complete (possibly waiting for the body to drain)."""
        return bool(self.finished) or self._finishPending

    def finish(self) -> None:
        if self.bodyDone or self.channel is None or self.finished:
            server.Request.finish(self)
            return
        # The response ended before the body: Twisted would pop this request
        # and crash on the next body byte (DESIGN.md §1.7).  Drain a short
        # remainder, keeping the connection; close on a long one.  A client
        # still waiting for 100 Continue may never send its body (it goes on
        # to its next request): close rather than read that as the body.
        self.bodyReceiver = None
        remaining = None if self.bodyLength is None else self.bodyLength - self.bodyReceived
        if remaining == 0 or (
            remaining is not None and remaining <= DRAIN_LIMIT and not self.expectContinue
        ):
            self._finishPending = True
            self.resumeBody()
            return
        if not self.startedWriting:
            self.setHeader(b"connection", b"close")
        self.channel.persistent = False
        server.Request.finish(self)


class RelayChannel(http.HTTPChannel):
    """An HTTP/1.1 channel that hands requests over at the end of their headers."""

    _bodyPaused = False
    _bodyTimeout: Any = None
    #: The TCP or TLS transport (ITransport does not declare producer methods).
    transport: Any
    #: Where to count connections (set by RelaySite).
    metrics: RelayMetrics | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        tune(self.transport)
        if self.metrics is not None:
            self.metrics.connection_opened()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self.metrics is not None:
            self.metrics.connection_closed()

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        # Hide Expect so that Twisted sends no automatic 100 Continue; the
        # resource sends it once the request is authenticated.
        expect = request.requestHeaders.getRawHeaders(b"expect")
        if expect is not None:
            request.requestHeaders.removeHeader(b"expect")
        super().allHeadersReceived()
        if expect is not None:
            request.requestHeaders.setRawHeaders(b"expect", expect)
            request.expectContinue = (
                expect[0].lower() == b"100-continue" and self._version == b"HTTP/1.1"
            )
        request.headersReceived(self._command, self._path, self._version)

    def allContentReceived(self) -> None:
        if not self.requests:
            # The response already ended and the connection is closing:
            # whatever else arrives is dropped.
            self.dataReceived = lambda data: None  # type: ignore[method-assign]
            return
        super().allContentReceived()

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        """Write the status line and headers, names as ``wire_name`` spells them."""
        if isinstance(headers, Headers):
            pairs = [(n, v) for n, values in headers.getAllRawHeaders() for v in values]
        else:
            pairs = list(headers)
        lines = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, value in pairs:
            if b"\r" in name + value or b"\n" in name + value:
                continue
            lines.extend((wire_name(name), b": ", value, b"\r\n"))
        lines.append(b"\r\n")
        self.transport.writeSequence(lines)

    def pauseBody(self) -> None:
        """Stop reading the request body (the upstream cannot take more)."""
        if not self._bodyPaused:
            self._bodyPaused = True
            # A paused client is not idle: do not time it out for our stall.
            self._bodyTimeout = self.setTimeout(None)
            self.transport.pauseProducing()

    def resumeBody(self) -> None:
        if self._bodyPaused:
            self._bodyPaused = False
            self.setTimeout(self._bodyTimeout)
            self.transport.resumeProducing()

    def resumeProducing(self) -> None:
        super().resumeProducing()
        if self._bodyPaused:
            # HTTPChannel resumes reading when its writes drain; keep the
            # upload paused while the upstream still cannot take it.
            self.transport.pauseProducing()
