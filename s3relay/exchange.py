# -*- test-case-name: tests.unit.test_exchange -*-
"""One accepted request relayed upstream, from its first body byte to the
last response byte, and every way that can end early."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    DNSLookupError,
)
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from s3relay.body.plan import BodyFilter, BodyPlan
from s3relay.body.producer import StreamingBody
from s3relay.http.headers import HOP_BY_HOP, connection_named, wire_name
from s3relay.http.request import RelayRequest, write_error
from s3relay.ops.keylog import plain_key
from s3relay.ops.management import UpstreamHealth
from s3relay.ops.metrics import RelayMetrics
from s3relay.s3.errors import Kind, S3Error
from s3relay.upstream.agent import BufferBudget
from s3relay.upstream.forward import UpstreamRequest
from s3relay.upstream.response import (
    FilteredRelay,
    ResponseRefused,
    ResponseRelay,
    Rewrite,
)
from s3relay.upstream.retry import may_retry

log = Logger(namespace="s3relay")


@dataclass(frozen=True)
class Monitor:
    """Where requests report what happened to them."""

    metrics: RelayMetrics
    health: UpstreamHealth
    clock: IReactorTime
    #: Shared with the upstream Agent (``make_agent``).
    buffers: BufferBudget = field(default_factory=BufferBudget)


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
        request_id: str,
        resource: str,
        monitor: Monitor,
    ) -> None:
        self.request = request
        self._agent = agent
        self.request_id = request_id
        self.resource = resource
        #: The S3 operation, once the request was classified.
        self.operation = "Unknown"
        #: The authenticated client's name, bucket and key, once known.
        self.client: str | None = None
        self.bucket: str | None = None
        self.key: bytes | None = None
        #: How the access record shows ``key`` (``[server] log_keys``); None: left out.
        self.key_text: Callable[[bytes], str] | None = plain_key
        #: Access-record fields saying where the request came from (``admission``).
        self.origin: dict[str, object] = {}
        #: Runs once when the request ends, however it ends (frees rate-limit slots).
        self.on_end: Callable[[], None] | None = None
        #: Rewrites a 200 response body before the client sees it (held whole, capped).
        self.rewrite: Rewrite | None = None
        self._error_code: str | None = None
        self._error_reason: str | None = None
        self._upstream_status: int | None = None
        self._upstream_request_id: str | None = None
        self._monitor = monitor
        self._started = self._upstream_started = monitor.clock.seconds()
        monitor.metrics.request_started()
        self._transport = request.channel.transport
        monitor.buffers.start(self._transport)
        request.notifyFinish().addBoth(self._ended)
        self._body: StreamingBody | None = None
        self._pending: Deferred[IResponse] | None = None
        self._relay: ResponseRelay | None = None
        self._client_gone = False
        #: Whether the upstream request was already sent a second time.
        self._retried = False
        self._retry_with: UpstreamRequest | None = None
        request.notifyFinish().addErrback(self._client_lost)
        request.failHandler = self._channel_failed
        #: Set once the channel gave up on the upstream (a timeout).
        self._given_up = False

    def start(self, upstream: UpstreamRequest, plan: BodyPlan, body_filter: BodyFilter) -> None:
        request = self.request
        producer = None
        if request.bodyLength == 0:
            try:
                body_filter.finish()
            except S3Error as e:
                self.refuse(e)
                return
        else:
            producer = self._body = StreamingBody(
                plan.length, body_filter, request, self._body_rejected,
                verify_first=plan.verify_first,
            )
            request.bodyReceiver = producer
        request.sendContinue()
        if producer is not None and producer.verified is not None:
            # The upstream hears of this request only once its whole body passed.
            producer.verified.addCallback(lambda _: self._request_upstream(upstream, producer))
            return
        self._request_upstream(upstream, producer)

    def _request_upstream(self, upstream: UpstreamRequest, producer: StreamingBody | None) -> None:
        headers = _AmzHeaders(
            {k.encode("latin-1"): [v.encode("latin-1")] for k, v in upstream.headers.items()}
        )
        self._upstream_started = self._monitor.clock.seconds()
        self.request.awaitUpstream()  # first_byte_timeout, once the body is complete
        # Kept for one retry on a new connection (_retry_upstream).
        self._retry_with = upstream if not self._retried else None
        self._pending = self._agent.request(
            upstream.method.encode("ascii"), upstream.url.encode("ascii"), headers,
            producer.attempt() if producer is not None else None,
        )
        self._pending.addCallbacks(self._response, self._failed)

    def refuse(self, error: S3Error) -> None:
        self.request.upstreamAnswered()
        log.info(
            "refused {method} {resource}: {code} ({reason}) request_id={request_id}",
            method=self.request.method.decode("latin-1"),
            resource=self._log_resource(),
            code=error.code,
            reason=error.reason,
            request_id=self.request_id,
        )
        self._monitor.metrics.refused(error.code)
        self._error_code = error.code
        self._error_reason = error.reason
        write_error(self.request, error, self.resource)

    def _response(self, response: IResponse) -> None:
        self._pending = None
        self.request.upstreamAnswered()
        now = self._monitor.clock.seconds()
        self._monitor.metrics.upstream_response(now - self._upstream_started)
        self._monitor.health.success(now)
        self._upstream_status = response.code
        ids = response.headers.getRawHeaders(b"x-amz-request-id")
        self._upstream_request_id = ids[0].decode("latin-1") if ids else None
        request = self.request
        if self._client_gone or request.finishing:
            response.deliverBody(_Discard())
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
        request.responseHeaders.setRawHeaders(b"x-s3relay-request-id", [self.request_id.encode()])
        relay: ResponseRelay
        if self.rewrite is not None and response.code == 200:
            self._relay = relay = FilteredRelay(request, self.rewrite)
        else:
            self._relay = relay = ResponseRelay(request)
        response.deliverBody(relay)
        relay.done.addCallbacks(self._response_done, self._response_failed)

    def _response_done(self, _: None) -> None:
        if not self._client_gone and not self.request.finishing:
            self.request.finish()

    def _response_failed(self, failure: Failure) -> None:
        if isinstance(failure.value, ResponseRefused):
            self.refuse(failure.value.error)
            return
        log.warn(
            "upstream died mid-response to {method} {resource}: {error} request_id={request_id}",
            method=self.request.method.decode("latin-1"),
            resource=self._log_resource(),
            error=failure.getErrorMessage(),
            request_id=self.request_id,
        )
        self._monitor.metrics.upstream_error("body")
        if not self._client_gone:
            # A truncated body must never look complete.
            self._error_reason = "upstream connection lost mid-response; client connection aborted"
            self.request.abortConnection()

    def _failed(self, failure: Failure) -> None:
        self._pending = None
        if self._body is not None and self._body.error is not None:
            return  # already answered by _body_rejected
        if self._client_gone or self._given_up or failure.check(CancelledError):
            return
        if self._retry_upstream(failure):
            return
        error = upstream_error(failure)
        self._monitor.metrics.upstream_error(failure_kind(failure))
        self._monitor.health.failure(self._monitor.clock.seconds(), error.reason)
        self.refuse(error)

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
            resource=self._log_resource(),
            error=failure.getErrorMessage(),
            request_id=self.request_id,
        )
        self._monitor.metrics.upstream_error("retried")
        self._retried = True
        self._request_upstream(upstream, self._body)
        return True

    def _channel_failed(self, error: S3Error) -> None:
        """The channel gave up on this request (a timeout, a malformed body):
        drop the upstream request and answer ``error`` (limits, channel)."""
        self._given_up = True
        if error.kind is Kind.UPSTREAM:  # the upstream stalled (errors.upstream_timeout)
            self._monitor.metrics.upstream_error("timeout")
            self._monitor.health.failure(self._monitor.clock.seconds(), error.reason)
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        if self._relay is not None:
            # Upstream headers are in, the client has none: cut, never mix.
            self._relay.stop()
            self.request.abortConnection()
            return
        self.refuse(error)

    def _body_rejected(self, error: S3Error) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        self.refuse(error)

    def _ended(self, result: object) -> None:
        request = self.request
        if isinstance(result, Failure) and self._error_reason is None:
            # The access record says why the exchange ended short.
            self._error_reason = "client connection lost before the response was complete"
        self._monitor.buffers.end(self._transport, request.bodyReceived + request.sentLength)
        if self.on_end is not None:
            self.on_end()
        method = request.method.decode("latin-1")
        status = request.code if request.startedWriting else 0
        duration = self._monitor.clock.seconds() - self._started
        self._monitor.metrics.request_finished(
            self.operation, method, status, duration, request.bodyReceived, request.sentLength
        )
        forwarded = request.requestHeaders.getRawHeaders(b"x-forwarded-for")
        address = request.getClientAddress()
        access = {
            "request_id": self.request_id,
            "client": self.client,
            "remote": getattr(address, "host", None),
            # As claimed by the client: not trusted for any decision.
            "forwarded_for": forwarded[0].decode("latin-1") if forwarded else None,
            "method": method,
            "operation": self.operation,
            "bucket": self.bucket,
            "key": self.key_text(self.key) if self.key is not None and self.key_text else None,
            "status": status,
            "error_code": self._error_code,
            "bytes_in": request.bodyReceived,
            "bytes_out": request.sentLength,
            "duration": round(duration, 6),
            "upstream_status": self._upstream_status,
            "upstream_request_id": self._upstream_request_id,
            "reason": self._error_reason,
        }
        access.update(self.origin)
        if self.key_text is None:
            del access["key"]
        log.info(
            "access {method} {resource} {status} {operation} request_id={request_id}",
            method=method,
            resource=self._log_resource(),
            status=status,
            operation=self.operation,
            request_id=self.request_id,
            access=access,
        )

    def _log_resource(self) -> str:
        """The resource for log lines: the key shown as ``log_keys`` says."""
        if self.key_text is plain_key:
            return self.resource
        if self.key is None:
            # Before the target is parsed the path may still hold a key.
            return self.resource if self.bucket is not None else "(path not logged)"
        shown = self.key_text(self.key) if self.key_text is not None else "(key not logged)"
        return f"/{self.bucket}/{shown}" if self.bucket is not None else f"/{shown}"

    def _client_lost(self, reason: Failure) -> None:
        self._client_gone = True
        if self._body is not None:
            self._body.clientLost(reason)
        if self._relay is not None:
            self._relay.stop()
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()


class _AmzHeaders(Headers):
    """Upstream request headers, names as ``wire_name`` spells them."""

    def getAllRawHeaders(self) -> Any:
        for name, values in super().getAllRawHeaders():
            yield wire_name(name), values


class _Discard(Protocol):
    """Drops a response nobody is waiting for, closing its connection."""

    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()
