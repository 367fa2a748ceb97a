# -*- test-case-name: tests.unit.test_channel -*-
"""A request that is rendered at the end of its headers, its body streamed.

``RelayChannel`` calls ``headersReceived`` once the head is in; the resource
renders then and, on accepting the body, sets ``bodyReceiver``.  Every error
the relay answers on a request it has dispatched is written by
``write_error``.
"""

from __future__ import annotations

import io
from typing import Any, Callable, Protocol, cast
from urllib.parse import unquote_to_bytes

from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import datetimeToString

from s3relay.compat import client_gone
from s3relay.http.target import read_target
from s3relay.s3.errors import S3Error, error_response, new_request_id


class BodyReceiver(Protocol):
    """Where a request's body bytes go once a resource has accepted it."""

    def dataReceived(self, data: bytes) -> None: ...

    def bodyComplete(self) -> None: ...


class RequestChannel(Protocol):
    """What a request asks of its channel (``RelayChannel``)."""

    transport: Any
    persistent: bool

    def holdIdle(self) -> None: ...

    def releaseIdle(self) -> None: ...

    def pauseBody(self) -> None: ...

    def resumeBody(self) -> None: ...


#: A response that ends while at most this many body bytes are still to come
#: waits for them (and keeps the connection); otherwise the connection closes.
DRAIN_LIMIT = 1024 * 1024


class PlainRequest(server.Request):
    """A twisted.web request that names no server software and answers no
    request itself: every one, whatever its target, goes to the resource.

    ``server.Request.process`` does two things before it asks the Site for a
    resource: it sets ``Server: TwistedWeb/<version>`` (from the module
    global ``server.version``; no Site or Request attribute turns it off),
    and it answers an asterisk-form target (``OPTIONS *`` 200, another
    method 405) on its own -- before the resource's admission, with no
    access record.  ``process`` here is the rest of it, spelled out in
    public names: the Date header, the resource lookup, render.  (It leaves
    out content encoders, ``resource.EncodingResourceWrapper``: neither the
    relay nor the management site uses one.)  Both sites' requests are one
    of these (``RelayRequest``, ``ops.management.ManagementSite``).
    """

    def process(self) -> None:
        self.site = cast(Any, self.channel).site  # Site.buildProtocol sets it
        self.setHeader(b"Date", datetimeToString())
        self.prepath = []
        self.postpath = [unquote_to_bytes(segment) for segment in self.path[1:].split(b"/")]
        try:
            self.render(self.site.getResourceFor(self))
        except BaseException:
            self.processingFailed(Failure())


class RelayRequest(PlainRequest):
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
    #: Answers an error the channel raises for this request (a timeout, a broken
    #: body): the exchange sets it, so that the refusal is logged, counted and
    #: the upstream request dropped.  None: answered here.
    failHandler: Callable[[S3Error], None] | None = None
    #: Whether the upstream request was sent and its response is still due.
    _awaitingUpstream = False
    #: The response announced that the connection closes after it (``write``).
    _closing = False
    #: Runs once the client waits for the upstream (``awaitUpstream``).
    _onWaiting: Callable[[], object] | None = None
    #: Why the request-target is refused (``http.target``), raised by the
    #: resource once the request passed admission; None: served.
    targetRefusal: S3Error | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Minted once: every answer and log line of this request carries it.
        self.requestId = new_request_id()

    def gotLength(self, length: int | None) -> None:
        # Never open a content file: the body streams through bodyReceiver.
        self.bodyLength = length
        self.content = io.BytesIO()

    def headersReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Set up what ``requestReceived`` would, then render before the body.

        An absolute-form target is served as its origin-form, its authority
        the Host (``http.target``); any other target goes to the resource as
        sent, ``targetRefusal`` saying why it is refused.
        """
        self.args = {}
        target = read_target(command, path, self.requestHeaders.getRawHeaders(b"host"))
        if target.host is not None:
            self.requestHeaders.setRawHeaders(b"host", [target.host])
        self.targetRefusal = target.refusal
        self.method, self.uri = command, target.uri
        self.clientproto = version
        self.path = target.uri.split(b"?", 1)[0]
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
        if self._awaitingUpstream:
            self._waiting()
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

    def awaitUpstream(self, waiting: Callable[[], object] | None = None) -> None:
        """The upstream request is on its way.  Once the body is complete the
        client waits for the upstream: the channel's idle timer holds, and
        ``waiting`` runs (the exchange starts ``first_byte_timeout``)."""
        self._awaitingUpstream = True
        self._onWaiting = waiting
        if self.bodyDone:
            self._waiting()

    def _waiting(self) -> None:
        if self.relayChannel is not None:
            self.relayChannel.holdIdle()
        waiting, self._onWaiting = self._onWaiting, None
        if waiting is not None:
            waiting()

    def upstreamAnswered(self) -> None:
        """The upstream's response headers arrived (or it failed)."""
        if self._awaitingUpstream:
            self._awaitingUpstream = False
            self._onWaiting = None
            if self.relayChannel is not None:
                self.relayChannel.releaseIdle()

    def fail(self, error: S3Error) -> None:
        """Answer ``error`` (the channel decided: a timeout, a broken body)."""
        self.upstreamAnswered()
        if self.failHandler is not None:
            self.failHandler(error)
            return
        write_error(self, error)

    def abortConnection(self) -> None:
        """Cut the client connection: a response that cannot be completed must look cut."""
        if self.relayChannel is not None:
            self.relayChannel.transport.abortConnection()

    @property
    def relayChannel(self) -> RequestChannel | None:
        return cast("RequestChannel | None", self.channel)

    @property
    def finishing(self) -> bool:
        """Whether the response is complete (possibly waiting for the body to drain)."""
        return bool(self.finished) or self._finishPending

    def write(self, data: bytes) -> None:
        if not self.startedWriting and not self._bodyDrainable():
            # The response starts while more of the body is to come than
            # ``finish`` would drain: the connection closes after it, so
            # its head says so (RFC 9112 §9.6).
            self._closing = True
            self.setHeader(b"connection", b"close")
        super().write(data)

    def _bodyDrainable(self) -> bool:
        """Whether what is left of the body may be read and dropped, keeping
        the connection.  A client still waiting for 100 Continue may never
        send its body (it goes on to its next request): that is not drained."""
        if self.bodyDone or self.channel is None:
            return True
        remaining = None if self.bodyLength is None else self.bodyLength - self.bodyReceived
        return remaining == 0 or (
            remaining is not None and remaining <= DRAIN_LIMIT and not self.expectContinue
        )

    def finish(self) -> None:
        if self.bodyDone or self.channel is None or self.finished:
            server.Request.finish(self)
            return
        # The response ended before the body: Twisted would pop this request
        # and crash on the next body byte (DESIGN.md §1.7).  Drain a short
        # remainder, keeping the connection; close on a long one.
        self.bodyReceiver = None
        if not self._closing and self._bodyDrainable():
            self._finishPending = True
            self.resumeBody()
            return
        if not self.startedWriting:
            self.setHeader(b"connection", b"close")
        self.channel.persistent = False
        server.Request.finish(self)


def write_error(request: RelayRequest, error: S3Error, resource: str = "") -> None:
    """Answer ``request`` with ``error`` as S3 would, under the request's id.

    Once the response has started, a status can no longer be sent: the
    connection is cut, so that the failure never looks like a short body.
    """
    if client_gone(request) or request.finishing:
        return
    if request.startedWriting:
        request.abortConnection()
        return
    response = error_response(error, request.requestId, resource)
    request.setResponseCode(response.status)
    for name, value in response.headers:
        request.responseHeaders.setRawHeaders(name, [value])
    origin = request.getHeader(b"origin")
    if origin is not None:
        # A page's request the relay refused: let the page read why (the
        # error names nothing the page did not send), as S3 lets it where
        # the bucket's CORS rules allow the origin.
        request.responseHeaders.setRawHeaders(b"access-control-allow-origin", [origin])
        request.responseHeaders.setRawHeaders(b"vary", [b"Origin"])
    request.write(response.body)
    request.finish()
