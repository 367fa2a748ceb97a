# -*- test-case-name: tests.unit.test_exchange -*-
"""One accepted request relayed upstream, from its first body byte to the
last response byte, and every way that can end early: the upstream's
``first_byte_timeout`` is kept here, on the injected clock; the channel keeps
only the client's timers.  How the request ended is its ``Outcome``'s to
count and log."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    DNSLookupError,
)
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent, IResponse

from s3relay.body.producer import StreamingBody
from s3relay.crypt.reader import DecryptingRelay, plaintext_head
from s3relay.crypt.segments import DecryptionFailed
from s3relay.decision import Decision
from s3relay.http.headers import HOP_BY_HOP, connection_named
from s3relay.http.idle import cancel
from s3relay.http.request import RelayRequest
from s3relay.outcome import Monitor, Outcome
from s3relay.s3.errors import Kind, S3Error, upstream_timeout
from s3relay.upstream.agent import WireHeaders
from s3relay.upstream.forward import UpstreamRequest
from s3relay.upstream.response import (
    FilteredRelay,
    ResponseRefused,
    ResponseRelay,
)
from s3relay.upstream.retry import may_retry

log = Logger(namespace="s3relay")


def failure_kind(failure: Failure) -> str:
    """A metric label for why the upstream could not be used."""
    if failure.check(DNSLookupError):
        return "dns"
    if failure.check(ConnectTimeout):
        return "timeout"
    if failure.check(ConnectError, ConnectingCancelledError):
        return "connect"
    return "response"


def upstream_error(failure: Failure) -> S3Error:
    """The S3 error a client gets when the upstream could not be used."""
    if failure_kind(failure) != "response":
        return S3Error(
            "ServiceUnavailable",
            "The upstream S3 service is unreachable; please retry.",
            503,
            f"upstream unreachable: {failure.getErrorMessage()}",
            kind=Kind.UPSTREAM,
        )
    return S3Error(
        "InternalError",
        "The upstream S3 service failed to answer; please retry.",
        502,
        f"upstream failed: {getattr(failure.type, '__name__', '?')}: {failure.getErrorMessage()}",
        kind=Kind.UPSTREAM,
    )


class Exchange:
    """Moves one request upstream and its response back."""

    def __init__(
        self,
        request: RelayRequest,
        agent: IAgent,
        decision: Decision,
        outcome: Outcome,
        monitor: Monitor,
    ) -> None:
        self.request = request
        self._agent = agent
        self._decision = decision
        self._outcome = outcome
        self._record = outcome.record
        self._monitor = monitor
        outcome.on_end(decision.release)
        self._route = decision.route
        self._health = monitor.health_of(decision.route)
        self._upstream_started = monitor.clock.seconds()
        self._body: StreamingBody | None = None
        self._pending: Deferred[IResponse] | None = None
        self._relay: ResponseRelay | None = None
        #: ``first_byte_timeout``, while the client waits for the upstream.
        self._first_byte: IDelayedCall | None = None
        self._client_gone = False
        #: Whether the upstream request was already sent a second time.
        self._retried = False
        self._retry_with: UpstreamRequest | None = None
        request.notifyFinish().addErrback(self._client_lost)
        request.failHandler = self._give_up
        #: Set once the exchange gave up on the upstream (a timeout).
        self._given_up = False
        #: The upload id's check under way (``decision.upload_check``).
        self._checking: Deferred[Any] | None = None

    def start(self) -> None:
        """Take the body (if any) and send the request upstream."""
        request, decision = self.request, self._decision
        plan, body_filter = decision.plan, decision.body_filter
        producer = None
        if request.bodyLength == 0 and plan.length == 0:
            try:
                body_filter.finish()
            except S3Error as e:
                self._outcome.refuse(e)
                return
        else:
            producer = self._body = StreamingBody(
                plan.length, body_filter, request, self._body_rejected,
                verify_first=plan.verify_first,
            )
            # With no client body the channel completes it all the same: the
            # filter's final output is then the whole upstream body (an empty
            # object, sealed).
            request.bodyReceiver = producer
        check = decision.upload_check
        if check is not None and check.needed():
            # The body waits (buffered, then paused; no 100 Continue) until
            # the upstream said the upload id is this key's.
            self._checking = check.run(self._agent)
            self._checking.addCallbacks(lambda _: self._look_up(producer), self._check_failed)
            return
        self._look_up(producer)

    def _look_up(self, producer: StreamingBody | None) -> None:
        lookup = self._decision.lookup
        if lookup is None or self.request.finishing:
            self._send(producer)
            return
        # E.g. an encrypted object's GET: its HEAD decides the GET (crypt.reader).
        self._checking = lookup.lookup(self._agent)
        self._checking.addCallbacks(
            lambda upstream: self._send(producer, upstream), self._check_failed
        )

    def _send(
        self, producer: StreamingBody | None, upstream: UpstreamRequest | None = None
    ) -> None:
        self._checking = None
        if self.request.finishing:
            return  # answered meanwhile (the body was refused)
        decision = self._decision
        upstream = upstream or decision.upstream
        self.request.sendContinue()
        if producer is not None and producer.verified is not None:
            # The upstream hears of this request only once its whole body passed.
            resign = decision.resign
            producer.verified.addCallback(
                lambda body: self._request_upstream(
                    resign(body) if resign is not None else upstream, producer
                )
            )
            return
        self._request_upstream(upstream, producer)

    def _request_upstream(self, upstream: UpstreamRequest, producer: StreamingBody | None) -> None:
        headers = WireHeaders(upstream.wire_headers())
        self._upstream_started = self._monitor.clock.seconds()
        self.request.awaitUpstream(self._await_first_byte)
        # Kept for one retry on a new connection (_retry_upstream).
        self._retry_with = upstream if not self._retried else None
        self._pending = self._agent.request(
            upstream.method.encode("ascii"), upstream.url.encode("ascii"), headers,
            producer.attempt() if producer is not None else None,
        )
        self._pending.addCallbacks(self._response, self._failed)

    def _check_failed(self, failure: Failure) -> None:
        if self._checking is None:
            return  # cancelled: the request was answered otherwise (_cancel_upstream)
        self._checking = None
        if self._client_gone or failure.check(CancelledError):
            return
        if isinstance(failure.value, S3Error):
            error = failure.value
        else:
            error = upstream_error(failure)
            self._monitor.metrics.upstream_error(failure_kind(failure), self._route)
        self._outcome.refuse(error)

    def _await_first_byte(self) -> None:
        """The whole request is upstream: its answer is due within first_byte_timeout."""
        self._stop_first_byte()
        self._first_byte = self._monitor.clock.callLater(
            self._decision.first_byte_timeout, self._first_byte_timed_out
        )

    def _stop_first_byte(self) -> None:
        cancel(self._first_byte)
        self._first_byte = None

    def _first_byte_timed_out(self) -> None:
        self._first_byte = None
        timeout = self._decision.first_byte_timeout
        # The request is complete: the connection may carry the next one.
        self._give_up(
            upstream_timeout(f"no response headers within first_byte_timeout = {timeout}s")
        )

    def _response(self, response: IResponse) -> None:
        self._pending = None
        self._stop_first_byte()
        self.request.upstreamAnswered()
        now = self._monitor.clock.seconds()
        self._monitor.metrics.upstream_response(now - self._upstream_started, self._route)
        self._health.success(now)
        self._record.upstream_status = response.code
        if self._decision.upload_check is not None:
            self._decision.upload_check.ended(self._decision.operation.name, response.code)
        ids = response.headers.getRawHeaders(b"x-amz-request-id")
        self._record.upstream_request_id = ids[0].decode("latin-1") if ids else None
        request = self.request
        if self._client_gone or request.finishing:
            response.deliverBody(_Discard())
            return
        reader, opener = self._decision.reader, None
        if reader is not None:
            try:
                opener = reader.open(response)
            except S3Error as e:
                response.deliverBody(_Discard())
                self._outcome.refuse(e)
                return
        request.setResponseCode(response.code, response.phrase)
        named = connection_named(
            v.decode("latin-1") for v in response.headers.getRawHeaders(b"connection", ())
        )
        for name, values in response.headers.getAllRawHeaders():
            lower = name.lower().decode("latin-1")
            if lower not in HOP_BY_HOP and lower not in named:
                request.responseHeaders.setRawHeaders(name, values)
        if isinstance(response.length, int) and request.method != b"HEAD":
            request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % response.length])
        request.responseHeaders.setRawHeaders(b"x-s3relay-request-id", [self._record.request_id.encode()])
        if reader is not None:
            reader.rewrite_headers(request)
        if self._decision.shows_etag:  # an encrypted object's or part's PUT
            plaintext_head(request.responseHeaders)
        relay: ResponseRelay
        rewrite = self._decision.rewrite
        if opener is not None:
            self._relay = relay = DecryptingRelay(request, opener)
        elif rewrite is not None and response.code == 200:
            self._relay = relay = FilteredRelay(request, rewrite)
        else:
            self._relay = relay = ResponseRelay(request)
        response.deliverBody(relay)
        relay.done.addCallbacks(self._response_done, self._response_failed)

    def _response_done(self, _: None) -> None:
        if not self._client_gone and not self.request.finishing:
            self.request.finish()

    def _response_failed(self, failure: Failure) -> None:
        if isinstance(failure.value, ResponseRefused):
            self._outcome.refuse(failure.value.error)
            return
        if isinstance(failure.value, DecryptionFailed):
            log.error(
                "stored object failed to decrypt, {method} {resource}: {error}; client "
                "connection aborted request_id={request_id}",
                method=self._record.method,
                resource=self._outcome.log_resource(),
                error=failure.getErrorMessage(),
                request_id=self._record.request_id,
            )
            self._monitor.metrics.decryption_failed()
            self._record.reason = f"decryption failed: {failure.getErrorMessage()}"
            if not self._client_gone:
                self.request.abortConnection()
            return
        log.warn(
            "upstream died mid-response to {method} {resource}: {error} request_id={request_id}",
            method=self._record.method,
            resource=self._outcome.log_resource(),
            error=failure.getErrorMessage(),
            request_id=self._record.request_id,
        )
        self._monitor.metrics.upstream_error("body", self._route)
        if not self._client_gone:
            # A truncated body must never look complete.
            self._record.reason = "upstream connection lost mid-response; client connection aborted"
            self.request.abortConnection()

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        self._stop_first_byte()
        if self._body is not None and self._body.error is not None:
            return  # already answered by _body_rejected
        if self._client_gone or self._given_up or failure.check(CancelledError):
            return
        if self._retry_upstream(failure):
            return
        error = upstream_error(failure)
        self._monitor.metrics.upstream_error(failure_kind(failure), self._route)
        self._health.failure(self._monitor.clock.seconds(), error.reason)
        self._outcome.refuse(error)

    def _retry_upstream(self, failure: Failure) -> bool:
        """Send the request again, once, if its connection died before any
        response and no body byte left (a stale pooled connection; retry.py)."""
        upstream, self._retry_with = self._retry_with, None
        if upstream is None or not may_retry(upstream.method, failure, self._body):
            return False
        log.info(
            "upstream connection died before answering {method} {resource} ({error}); "
            "retrying on a new connection request_id={request_id}",
            method=upstream.method,
            resource=self._outcome.log_resource(),
            error=failure.getErrorMessage(),
            request_id=self._record.request_id,
        )
        self._monitor.metrics.upstream_error("retried", self._route)
        self._retried = True
        self._request_upstream(upstream, self._body)
        return True

    def _give_up(self, error: S3Error) -> None:
        """Drop the upstream request and answer ``error``: the upstream did not
        answer in time, or the channel gave up (a timeout, a malformed body)."""
        self._given_up = True
        self._stop_first_byte()
        if error.kind is Kind.UPSTREAM:  # the upstream stalled (errors.upstream_timeout)
            self._monitor.metrics.upstream_error("timeout", self._route)
            self._health.failure(self._monitor.clock.seconds(), error.reason)
        self._cancel_upstream()
        if self._relay is not None:
            # Upstream headers are in, the client has none: cut, never mix.
            self._relay.stop()
            self.request.abortConnection()
            return
        self._outcome.refuse(error)

    def _body_rejected(self, error: S3Error) -> None:
        self._cancel_upstream()
        self._outcome.refuse(error)

    def _client_lost(self, reason: Failure) -> None:
        self._client_gone = True
        self._stop_first_byte()
        if self._body is not None:
            self._body.clientLost(reason)
        if self._relay is not None:
            self._relay.stop()
        self._cancel_upstream()

    def _cancel_upstream(self) -> None:
        """Drop the upstream request under way, or the upload id's check."""
        # Cleared first: a cancelled check may fail with its own error (the
        # connection it was making), which is not the client's answer.
        pending, checking = self._pending, self._checking
        self._pending = self._checking = None
        for deferred in (pending, checking):
            if deferred is not None:
                deferred.cancel()


class _Discard(Protocol):
    """Drops a response nobody is waiting for, closing its connection."""

    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()
