# -*- test-case-name: tests.unit.test_channel -*-
"""An HTTP channel that dispatches a request when its headers arrive.

Stock ``twisted.web`` reads a whole request body (into memory or a temp file)
before a resource sees the request, and answers ``Expect: 100-continue`` on
its own.  A relay must instead decide from the headers, start the upstream
request, and stream the body through with backpressure (Twisted #4688;
DESIGN.md §1).  Every touch of Twisted-private channel state lives in this
module, and ``tests/unit/test_channel.py`` pins the hook order it relies on.
"""

from __future__ import annotations

import enum
from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall, ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http_headers import Headers

from s3relay.http.head import HeadCheck
from s3relay.http.headers import response_head
from s3relay.http.idle import IdleTimer, cancel
from s3relay.http.limits import DEFAULT_LIMITS, Limits
from s3relay.ops.metrics import RelayMetrics
from s3relay.s3.errors import (
    S3Error,
    bad_request,
    error_response,
    new_request_id,
    request_timeout,
    slow_down,
    upstream_timeout,
)

log = Logger(namespace="s3relay")


#: After an answer that ends the connection while request bytes may still be
#: coming, how long they are read and dropped: a close with unread bytes is a
#: reset, which can destroy the answer before the client reads it (a client
#: still sending a refused body sees a broken pipe).  RFC 9112 §9.6.
LINGER_SECONDS = 5.0


class Phase(enum.Enum):
    """What a connection is doing, for the timers and for graceful shutdown."""

    IDLE = "idle"  # between requests (keep-alive)
    HEAD = "head"  # reading a request line and headers
    BODY = "body"  # request dispatched, its body still arriving
    BUSY = "busy"  # request body complete, response under way
    CLOSED = "closed"


IDLE, HEAD, BODY, BUSY, CLOSED = Phase


class RelayChannel(http.HTTPChannel):
    """An HTTP/1.1 channel that hands requests over at the end of their headers.

    It also owns the connection's client-side timers (``limits``):
    ``header_timeout`` from the first byte of a request to the end of its
    headers (slow-loris); the idle timer, which fires only when no byte moved
    either way for ``idle_timeout`` seconds (an upload paused for the upstream
    counts the upstream's progress; while the client waits for the upstream's
    answer the timer holds, and the exchange's ``first_byte_timeout`` runs);
    and the linger after a close.  Twisted's own timeout (reset only by reads,
    and off while a response is written) is not used.  Requests that are not
    valid HTTP, too large a head, and timeouts all get S3 XML errors.

    Its dependencies arrive with it (``RelaySite.buildProtocol``): the limits,
    where connections are counted, whether it is one past ``max_connections``,
    and who hears of its end.
    """

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        metrics: RelayMetrics | None = None,
        overloaded: bool = False,
        onClosed: Callable[[RelayChannel], None] | None = None,
    ) -> None:
        super().__init__()
        #: Timeouts and head-size limits.
        self.limits = limits
        #: Where to count connections.
        self.metrics = metrics
        #: Answer the next request with 503 SlowDown and close (too many connections).
        self.overloaded = overloaded
        #: Called once the connection is gone (connection tracking).
        self.onClosed = onClosed
        #: The request head being read.
        self._head = HeadCheck(limits)

    _bodyPaused = False
    #: The TCP or TLS transport (ITransport does not declare producer methods).
    transport: Any

    _phase = IDLE
    _draining = False
    #: No byte moved either way for ``idle_timeout`` (made with the connection).
    _idle: IdleTimer | None = None
    _headCall: IDelayedCall | None = None
    _abortCall: IDelayedCall | None = None
    _lingerCall: IDelayedCall | None = None
    #: Closing now may leave request bytes unread (see ``LINGER_SECONDS``).
    _unread = False

    # Connection life.

    def connectionMade(self) -> None:
        # The idle timer is ours (see the class docstring): keep Twisted's off.
        factory = self.factory
        self._idle = IdleTimer(
            self.timeOut,
            factory.reactor.seconds,
            lambda delay, f: self.callLater(delay, f),  # as callLater is when it runs
            self._idleTimedOut,
        )
        self.timeOut = None
        limits = self.limits
        # Twisted's own head limits stay as a backstop behind ours.
        self.MAX_LENGTH = max(limits.max_url_length + 64, limits.max_header_size) + 64
        self.totalHeadersSize = limits.max_url_length + limits.max_header_size + 1024
        self.maxHeaders = limits.max_headers + 10
        super().connectionMade()
        self._idle.arm()
        if self.metrics is not None:
            self.metrics.connection_opened()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._phase = CLOSED
        if self._idle is not None:
            self._idle.stop()
        for call in (self._headCall, self._abortCall, self._lingerCall):
            cancel(call)
        self._headCall = self._abortCall = self._lingerCall = None
        super().connectionLost(reason)
        if self.metrics is not None:
            self.metrics.connection_closed()
        if self.onClosed is not None:
            self.onClosed(self)

    # Reading requests.

    def dataReceived(self, data: bytes) -> None:
        if self._phase == CLOSED:
            return
        self._touch()
        if self._phase == IDLE:
            self._startHead()
        super().dataReceived(data)

    def _startHead(self) -> None:
        self._phase = HEAD
        self._head.start(self.limits)
        if self._headCall is None:
            self._headCall = self.callLater(self.limits.header_timeout, self._headTimedOut)

    def lineReceived(self, line: bytes) -> None:
        if self._phase == HEAD:
            refusal = self._head.line(line)
            if refusal is not None:
                self.refuseHead(refusal)
                return
        super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        if self._handlingRequest:
            # Pipelined bytes wait for the response under way.  Twisted >= 23
            # buffers here itself; 22.4 would feed them to a finished decoder.
            self._dataBuffer.append(data)
            buffered = sum(map(len, self._dataBuffer))
            if buffered > self._optimisticEagerReadSize and not self._waitingForTransport:
                self._networkProducer.pauseProducing()
            return
        super().rawDataReceived(data)

    def _finishRequestBody(self, data: bytes) -> None:
        # Twisted-private, called with what follows the body.  Buffer it before
        # the request completes, as Twisted >= 23 does: on 22.4 a response
        # that finished at once would leave pipelined requests unread.
        self._dataBuffer.append(data)
        self.allContentReceived()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refuseHead(self._head.too_long(line))

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted-private: every malformed request (request line, header name
        # or value, Content-Length, Transfer-Encoding, chunk framing) ends here,
        # where stock Twisted writes a bare "400 Bad Request".
        self.refuseHead(bad_request(f"malformed request ({self._phase.value})"))

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        persistent = bool(super().checkPersistence(request, version))
        # A CONNECT is refused (``http.target``), and what its client sends
        # next may be a tunnel's bytes rather than a request: close after it.
        if self._draining or self.overloaded or self._command == b"CONNECT":
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return persistent

    def allHeadersReceived(self) -> None:
        cancel(self._headCall)
        self._headCall = None
        if self.overloaded:
            self.refuseHead(slow_down("too many client connections (max_connections)"))
            return
        self._phase = BODY
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
        if not self.requests or self._phase == CLOSED:
            # The response already ended (or the request was refused) and the
            # connection is closing: whatever else arrives is dropped.
            self.dataReceived = lambda data: None  # type: ignore[method-assign]
            return
        self._phase = BUSY
        super().allContentReceived()
        if self._handlingRequest:
            # Read what follows as raw bytes into the pipeline buffer (Twisted
            # >= 23 switches itself; 22.4 would parse the next request now).
            self.setRawMode()

    def requestDone(self, request: Any) -> None:
        # A body may end while the upstream has it paused (the upstream's
        # resume never comes once the body is complete): left set, the flag
        # would stop reading the next request when this response's writes drain.
        self._bodyPaused = False
        self._unread = not request.bodyDone
        if self._phase != CLOSED:
            self._phase = IDLE
        self._touch()
        if self._idle is not None:
            self._idle.arm()
        super().requestDone(request)
        if self._draining and self._phase == IDLE:
            self._close()

    # Refusals.

    def refuseHead(self, error: S3Error) -> None:
        """Answer ``error`` and close: the request (or what there is of it) is unusable."""
        if self._phase == CLOSED:
            return
        if self._phase in (BODY, BUSY):
            # The request was dispatched: its exchange answers (or cuts) it.
            self._failRequest(error)
            return
        if self.metrics is not None:
            self.metrics.refused(error.code)
        log.info(
            "refused request from {peer}: {code} ({reason})",
            peer=str(self.transport.getPeer()),
            code=error.code,
            reason=error.reason,
        )
        # No request to answer through (the head is incomplete or unusable):
        # the same response, written straight to the transport.
        request_id = self.requests[-1].requestId if self.requests else new_request_id()
        response = error_response(error, request_id)
        phrase = http.RESPONSES.get(response.status, b"Error")
        headers = [*response.headers, (b"Connection", b"close")]
        self.writeHeaders(b"HTTP/1.1", b"%d" % response.status, phrase, headers)
        self.transport.write(response.body)
        self._close()

    def _failRequest(self, error: S3Error) -> None:
        """Answer the dispatched request with ``error`` (its exchange does), and close."""
        request = self.requests[-1] if self.requests else None
        if request is None or request.finishing:
            self._close()
            return
        if request.startedWriting:
            # Too late for a status: a cut connection, never a short body.
            log.warn("aborting a response under way: {reason}", reason=error.reason)
            self.transport.abortConnection()
            return
        self.persistent = False
        request.fail(error)
        self._close()

    def _close(self) -> None:
        """Close after the pending writes; abort if the peer does not let them drain."""
        if self._phase == CLOSED:
            return
        self._unread = self._unread or self._phase != IDLE
        self._phase = CLOSED
        self.persistent = False
        if self._idle is not None:
            self._idle.stop()
        cancel(self._headCall)
        self._headCall = None
        self.dataReceived = lambda data: None  # type: ignore[method-assign]
        if not self.transport.disconnecting:
            self.loseConnection()
        if self.abortTimeout is not None and self._abortCall is None:
            self._abortCall = self.callLater(self.abortTimeout, self.transport.abortConnection)

    def loseConnection(self) -> None:
        """Close once the pending writes are out; first linger if the client
        may still be sending (plain TCP: a TLS half-close is an unexpected EOF
        to clients, so TLS closes at once)."""
        transport = self.transport
        if (not self._unread or ISSLTransport.providedBy(transport)
                or not hasattr(transport, "loseWriteConnection") or transport.disconnecting):
            super().loseConnection()
            return
        self._unread = False
        transport.unregisterProducer()
        # Parse nothing more (LineReceiver stops at ``paused``, as it would at
        # ``disconnecting``); what is read from now on is dropped.
        self.paused = True
        self.dataReceived = lambda data: None  # type: ignore[method-assign]
        transport.loseWriteConnection()  # FIN once the answer is out; reading goes on
        transport.resumeProducing()
        # The client closing its side ends it sooner (connectionLost).
        self._lingerCall = self.callLater(LINGER_SECONDS, transport.loseConnection)

    # Timers.

    def _touch(self) -> None:
        """Bytes moved: the connection is not idle."""
        if self._idle is not None:
            self._idle.touch()

    def _idleTimedOut(self) -> None:
        seconds = self.factory.timeOut
        if self._phase == IDLE:
            self._close()
        elif self._phase == HEAD:
            self.refuseHead(request_timeout(f"request head idle for idle_timeout = {seconds}s"))
        elif self._phase == BODY and not self._bodyPaused:
            self.refuseHead(request_timeout(f"request body idle for idle_timeout = {seconds}s"))
        else:
            # The upstream stopped taking the body, or stopped sending (or the
            # client stopped reading) the response.
            self.refuseHead(upstream_timeout(f"no bytes moved for idle_timeout = {seconds}s"))

    def _headTimedOut(self) -> None:
        self._headCall = None
        if self._phase == HEAD:
            timeout = self.limits.header_timeout
            self.refuseHead(
                request_timeout(f"request head not complete within header_timeout = {timeout}s")
            )

    def holdIdle(self) -> None:
        """The whole request is upstream and the client waits for the answer:
        not idle (the exchange's ``first_byte_timeout`` runs instead)."""
        if self._idle is not None and self._phase != CLOSED:
            self._idle.hold()

    def releaseIdle(self) -> None:
        """The upstream answered (or gave up): the idle timer runs again."""
        if self._idle is not None:
            self._idle.release()

    # Graceful shutdown.

    def drain(self) -> None:
        """Finish the request under way, if any, then close; take no new one."""
        self._draining = True
        if self._phase == IDLE:
            self._close()
            return
        self.persistent = False
        for request in self.requests:
            if not request.startedWriting:
                request.responseHeaders.setRawHeaders(b"connection", [b"close"])

    def abort(self) -> None:
        """Cut the connection now (the shutdown grace is over)."""
        self._phase = CLOSED
        self.transport.abortConnection()

    # Writing responses.

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        """Write the status line and headers, names as ``wire_name`` spells them."""
        self._touch()
        if isinstance(headers, Headers):
            headers = [(n, v) for n, values in headers.getAllRawHeaders() for v in values]
        self.transport.writeSequence(response_head(version, code, reason, headers))

    def write(self, data: bytes) -> None:
        self._touch()
        self.transport.write(data)

    def writeSequence(self, iovec: Any) -> None:
        self._touch()
        self.transport.writeSequence(iovec)

    def pauseBody(self) -> None:
        """Stop reading the request body (the upstream cannot take more).

        The idle timer keeps running: while the body is paused it measures the
        upstream's progress (``resumeBody``), not the client's.
        """
        if not self._bodyPaused:
            self._bodyPaused = True
            self.transport.pauseProducing()

    def resumeBody(self) -> None:
        self._touch()
        if self._bodyPaused:
            self._bodyPaused = False
            self.transport.resumeProducing()

    def resumeProducing(self) -> None:
        # The client took what was written: progress.
        self._touch()
        super().resumeProducing()
        if self._bodyPaused:
            # HTTPChannel resumes reading when its writes drain; keep the
            # upload paused while the upstream still cannot take it.
            self.transport.pauseProducing()
