# -*- test-case-name: tests.unit.test_exchange -*-
"""How one request ended: counted, logged, its admission slots released.

Every request the resource renders has one ``Outcome``, whether it is refused
at once or relayed by an ``Exchange``: it counts the request, answers a
refusal (``refuse``), and when the response is done or the client is gone
writes the access record and frees what admission took.  The record's facts
(``AccessRecord``) are filled in as the relay learns them, so that a request
refused half-way is logged with everything known by then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3relay.http.request import RelayRequest, write_error
from s3relay.ops.keylog import plain_key
from s3relay.ops.management import UpstreamHealth
from s3relay.ops.metrics import RelayMetrics
from s3relay.s3.errors import S3Error
from s3relay.upstream.agent import BufferBudget

log = Logger(namespace="s3relay")

#: How the access record shows a key (``[server] log_keys``); None: left out.
KeyText = Callable[[bytes], str] | None


@dataclass(frozen=True)
class Monitor:
    """Where requests report what happened to them."""

    metrics: RelayMetrics
    #: The default upstream's health (``[upstream]``).
    health: UpstreamHealth
    clock: IReactorTime
    #: Shared with the upstream Agent (``make_agent``).
    buffers: BufferBudget = field(default_factory=BufferBudget)
    #: The health of each named upstream (``[upstream:NAME]``), made at first use.
    named_health: dict[str, UpstreamHealth] = field(default_factory=dict)

    def health_of(self, upstream: str) -> UpstreamHealth:
        if upstream == "default":
            return self.health
        if upstream not in self.named_health:
            self.named_health[upstream] = UpstreamHealth(self.clock.seconds)
        return self.named_health[upstream]

    def upstreams_check(self, names: Callable[[], Sequence[str]]) -> tuple[bool, str]:
        """Readiness of every upstream in ``names()`` (the default first): each
        named one that fails is named in the detail."""
        checked = [(name, self.health_of(name).check()) for name in names()]
        if len(checked) == 1:
            return checked[0][1]
        ok = all(good for _, (good, _) in checked)
        return ok, "; ".join(f"{name}: {detail}" for name, (_, detail) in checked)


@dataclass
class AccessRecord:
    """What the access log says of one request, as far as it is known."""

    request_id: str
    method: str
    #: The request path, as the client sent it.
    path: str
    client: str | None = None
    operation: str = "Unknown"
    bucket: str | None = None
    key: bytes | None = None
    #: Where the request came from (``access.admission.origin_of``).
    origin: dict[str, object] = field(default_factory=dict)
    error_code: str | None = None
    #: Why the request was refused or ended short.
    reason: str | None = None
    upstream_status: int | None = None
    upstream_request_id: str | None = None

    def resource(self, key_text: KeyText) -> str:
        """The resource for log lines: the key shown as ``log_keys`` says."""
        if key_text is plain_key:
            return self.path
        if self.key is None:
            # Before the target is parsed the path may still hold a key.
            return self.path if self.bucket is not None else "(path not logged)"
        shown = key_text(self.key) if key_text is not None else "(key not logged)"
        return f"/{self.bucket}/{shown}" if self.bucket is not None else f"/{shown}"


class Outcome:
    """Accounts for one request from its render to its end."""

    def __init__(
        self, request: RelayRequest, record: AccessRecord, monitor: Monitor, key_text: KeyText
    ) -> None:
        self.request = request
        self.record = record
        self._monitor = monitor
        self._key_text = key_text
        self._started = monitor.clock.seconds()
        self._releases: list[Callable[[], None]] = []
        self._transport = request.channel.transport
        monitor.metrics.request_started()
        monitor.buffers.start(self._transport)
        request.notifyFinish().addBoth(self._ended)

    def on_end(self, release: Callable[[], None]) -> None:
        """Run ``release`` once the request ends, however it ends."""
        self._releases.append(release)

    def refuse(self, error: S3Error) -> None:
        """Answer ``error`` (log, count, record), or cut a response under way."""
        self.request.upstreamAnswered()
        log.info(
            "refused {method} {resource}: {code} ({reason}) request_id={request_id}",
            method=self.record.method,
            resource=self.log_resource(),
            code=error.code,
            reason=error.reason,
            request_id=self.record.request_id,
        )
        self._monitor.metrics.refused(error.code)
        self.record.error_code = error.code
        self.record.reason = error.reason
        write_error(self.request, error, self.record.path)

    def log_resource(self) -> str:
        return self.record.resource(self._key_text)

    def _ended(self, result: object) -> None:
        request, record = self.request, self.record
        if isinstance(result, Failure) and record.reason is None:
            record.reason = "client connection lost before the response was complete"
        self._monitor.buffers.end(self._transport, request.bodyReceived + request.sentLength)
        for release in self._releases:
            release()
        status = request.code if request.startedWriting else 0
        duration = self._monitor.clock.seconds() - self._started
        self._monitor.metrics.request_finished(
            record.operation, record.method, status, duration,
            request.bodyReceived, request.sentLength,
        )
        forwarded = request.requestHeaders.getRawHeaders(b"x-forwarded-for")
        address = request.getClientAddress()
        key_text = self._key_text
        access: dict[str, object] = {
            "request_id": record.request_id,
            "client": record.client,
            "remote": getattr(address, "host", None),
            # As claimed by the client: not trusted for any decision.
            "forwarded_for": forwarded[0].decode("latin-1") if forwarded else None,
            "method": record.method,
            "operation": record.operation,
            "bucket": record.bucket,
            "key": key_text(record.key) if record.key is not None and key_text else None,
            "status": status,
            "error_code": record.error_code,
            "bytes_in": request.bodyReceived,
            "bytes_out": request.sentLength,
            "duration": round(duration, 6),
            "upstream_status": record.upstream_status,
            "upstream_request_id": record.upstream_request_id,
            "reason": record.reason,
        }
        access.update(record.origin)
        if key_text is None:
            del access["key"]
        log.info(
            "access {method} {resource} {status} {operation} request_id={request_id}",
            method=record.method,
            resource=self.log_resource(),
            status=status,
            operation=record.operation,
            request_id=record.request_id,
            access=access,
        )
