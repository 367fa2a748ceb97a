# -*- test-case-name: tests.unit.test_management -*-
"""The management site: ``/metrics``, ``/healthz`` and ``/readyz``.

It is a separate Site on its own listener (by default loopback), so that a
scraper or an orchestrator's probes never go through SigV4 and never share
the relay's listener, connection limits or access log.  There is no
authentication: it exposes counts and check results, never keys or object
names; put it on a private interface.

Not ``prometheus_client.twisted``: that module imports the global reactor at
import time (DESIGN.md §1).  ``/metrics`` is a plain Resource around
``RelayMetrics.render()``.

Liveness and readiness differ on purpose.  ``/healthz`` answers 200 whenever
the process can serve HTTP at all: restarting a relay because its upstream is
down would only add a cold start to the outage.  ``/readyz`` says whether this
relay should get traffic now, from check callables the relay registers
("listening", "config", "credentials", "upstream"); it answers 503 while any
check fails, so a load balancer sends clients elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from s3relay.http.request import PlainRequest
from s3relay.ops.metrics import RelayMetrics

log = Logger(namespace="s3relay.ops.management")

#: A readiness check: (ok, a short human-readable detail).  It must return at
#: once, without I/O: probes arrive every few seconds and must not pile up.
Check = Callable[[], tuple[bool, str]]

#: Longest ``detail`` shown, so that a check cannot bloat the probe response.
MAX_DETAIL = 200


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


@dataclass(frozen=True)
class ReadinessReport:
    #: True when every check passed (and when none is registered).
    ready: bool
    #: Results by check name, in registration order.
    checks: Mapping[str, CheckResult]

    def to_json(self) -> bytes:
        checks = {name: {"ok": r.ok, "detail": r.detail} for name, r in self.checks.items()}
        return _json({"ready": self.ready, "checks": checks})


class Readiness:
    """Named readiness checks, all run on every ``/readyz`` request.

    Checks are evaluated when asked rather than pushed as state, so the answer
    is never stale and a check cannot be forgotten in a "not ready" state.
    """

    def __init__(self) -> None:
        #: Checks by name, in registration order.
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} already registered")
        self._checks[name] = check

    def report(self) -> ReadinessReport:
        results = {name: self._run(name, check) for name, check in self._checks.items()}
        return ReadinessReport(all(r.ok for r in results.values()), results)

    def _run(self, name: str, check: Check) -> CheckResult:
        try:
            ok, detail = check()
        except Exception:
            # A broken check means "not ready", not a 500 the probe may ignore.
            log.failure("readiness check {name} raised", name=name)
            return CheckResult(False, "check raised an exception (see the log)")
        return CheckResult(bool(ok), str(detail)[:MAX_DETAIL])


class UpstreamHealth:
    """Whether the upstream answered lately, fed by the request path.

    The request path calls ``success(now)`` when the upstream sent response
    headers (any status: an S3 error is still an answer) and
    ``failure(now, detail)`` when it sent none (refused, timed out, reset).
    ``check`` then says:

    * the last contact was within ``window`` seconds: ready if it succeeded;
    * no contact within the window (none yet, or traffic stopped): ``probe``'s
      answer if one was given, else ready.

    A failure is forgotten after ``window`` on purpose: a relay taken out of
    the load balancer gets no traffic, so a failure that never expired would
    keep it out for good.  ``probe`` is where an active check (a periodic
    request to the upstream whose latest result the caller keeps) plugs in;
    it must return at once.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        window: float = 30.0,
        probe: Check | None = None,
    ) -> None:
        #: Current time in seconds: pass ``reactor.seconds``, so tests can move it.
        self._now = clock
        self._window = window
        self._probe = probe
        #: (time, ok, detail) of the last contact, None before the first.
        self._last: tuple[float, bool, str] | None = None

    def success(self, now: float) -> None:
        self._last = (now, True, "")

    def failure(self, now: float, detail: str) -> None:
        self._last = (now, False, detail[:MAX_DETAIL])

    def check(self) -> tuple[bool, str]:
        now = self._now()
        if self._last is not None and now - self._last[0] <= self._window:
            when, ok, detail = self._last
            ago = f"{max(now - when, 0.0):.1f} s ago"
            return (True, f"upstream answered {ago}") if ok else (False, f"{detail} ({ago})")
        idle = "no upstream traffic yet" if self._last is None else "no recent upstream traffic"
        if self._probe is None:
            return True, idle
        ok, detail = self._probe()
        return bool(ok), f"{idle}; probe: {detail}"


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8") + b"\n"


class _Endpoint(Resource):
    """A leaf answering GET and HEAD only, with JSON errors for everything else.

    twisted.web's own 404/405 pages are HTML; a probe or a curl in a
    runbook reads JSON more easily, and one shape for every answer is simpler.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):  # /metrics/x is not /metrics
            return _respond(request, _error(request, 404, "not found"))
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _respond(request, _error(request, 405, "method not allowed"))
        return _respond(request, self.get(request))

    def get(self, request: Request) -> bytes:
        raise NotImplementedError


class _NotFound(Resource):
    """Any path but the three endpoints, whatever the method."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return _respond(request, _error(request, 404, "not found"))


def _respond(request: Request, body: bytes) -> bytes:
    """``body`` for ``request``: never cached, and headers only for HEAD."""
    request.setHeader(b"cache-control", b"no-store")
    if request.method == b"HEAD":
        # Given a body, twisted.web drops it but logs a warning per HEAD probe.
        request.setHeader(b"content-length", b"%d" % len(body))
        return b""
    return body


def _error(request: Request, status: int, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return _json({"error": message})


class _Metrics(_Endpoint):
    def __init__(self, metrics: RelayMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def get(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self._metrics.content_type.encode("ascii"))
        return self._metrics.render()


class CollectedMetrics(_Endpoint):
    """``/metrics`` whose text is gathered at scrape time, asynchronously: the
    supervisor of ``[server] workers`` asks each worker process (``workers``)."""

    def __init__(self, collect: Callable[[], Deferred[bytes]], content_type: str) -> None:
        super().__init__()
        self._collect = collect
        self._content_type = content_type.encode("ascii")

    def render(self, request: Request) -> Any:
        if request.postpath not in ([], [b""]) or request.method not in (b"GET", b"HEAD"):
            return super().render(request)
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(body: bytes) -> None:
            if not gone:
                request.setHeader(b"content-type", self._content_type)
                request.write(_respond(request, body))
                request.finish()

        def failed(failure: Any) -> None:
            log.failure("collecting metrics failed", failure)
            if not gone:
                request.write(_respond(request, _error(request, 500, "metrics unavailable")))
                request.finish()

        self._collect().addCallbacks(answer, failed)
        return NOT_DONE_YET


class _Health(_Endpoint):
    def get(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return _json({"status": "ok"})


class _Ready(_Endpoint):
    def __init__(self, readiness: Readiness) -> None:
        super().__init__()
        self._readiness = readiness

    def get(self, request: Request) -> bytes:
        report = self._readiness.report()
        request.setResponseCode(200 if report.ready else 503)
        request.setHeader(b"content-type", b"application/json")
        return report.to_json()


class ManagementRoot(Resource):
    """``/metrics``, ``/healthz``, ``/readyz``; a JSON 404 for any other path."""

    def __init__(
        self,
        metrics: RelayMetrics,
        readiness: Readiness,
        metrics_resource: IResource | None = None,
    ) -> None:
        super().__init__()
        self.putChild(b"metrics", metrics_resource or _Metrics(metrics))
        self.putChild(b"healthz", _Health())
        self.putChild(b"readyz", _Ready(readiness))

    def getChild(self, path: bytes, request: Request) -> IResource:
        return _NotFound()

    def render(self, request: Request) -> bytes:
        # Only reached when this Resource is rendered directly, without a
        # path segment (the Site maps "/" to getChild(b"")).
        return _NotFound().render(request)


class ManagementSite(Site):
    """A Site that writes no access log: a scrape every few seconds and probes
    every second would bury the relay's own log lines."""

    #: No ``Server: TwistedWeb/<version>``, and ``*`` is a path like any
    #: other (a JSON 404), not Twisted's own answer (``PlainRequest``).
    requestFactory = PlainRequest

    def log(self, request: http.Request) -> None:
        pass


def make_management_site(
    metrics: RelayMetrics,
    readiness: Readiness,
    reactor: IReactorTime,
    metrics_resource: IResource | None = None,
) -> ManagementSite:
    """The management Site; serve it with its own endpoint (see module docstring).

    ``metrics_resource`` replaces ``/metrics`` (``CollectedMetrics`` for workers)."""
    site = ManagementSite(ManagementRoot(metrics, readiness, metrics_resource), reactor=reactor)
    site.displayTracebacks = False
    return site
