# -*- test-case-name: tests.unit.test_management -*-
"""What the relay counts, for Prometheus.

One ``RelayMetrics`` per relay owns its own ``CollectorRegistry``: nothing is
registered in prometheus_client's global registry, so two relays (or two
tests) in one process never share or collide on a metric.  The request path
calls the methods below; they do a dictionary lookup and an increment, no
I/O, because they run for every request.

Labels carry only low-cardinality words the relay chose itself: operation,
method, status, error kind, S3 error code, credential-set name.  Never a key,
bucket, object name, client address or secret: those would leak into every
dashboard and make the series count grow with the traffic.  Every label
value is checked again here (``_Label``), so that a caller passing something
unexpected costs one fallback series, not one series per request.

Pure: nothing from ``twisted.internet``; the caller measures durations with
its own clock and passes seconds.
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from s3relay import __version__

#: Seconds, 1 ms to 30 min: small GETs take milliseconds, a multi-GiB
#: transfer over a slow link takes many minutes, and both must be visible.
DURATION_BUCKETS = (
    *(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0),
)

#: Bytes, 1 KiB to 64 GiB in powers of 4: other proxies' size histograms stop
#: at 32 kB, which puts every real object in +Inf.
SIZE_BUCKETS = tuple(float(4**n) for n in range(5, 19))

#: Methods S3 clients send (OPTIONS for CORS preflight); any other is "OTHER".
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"})


class _Label:
    """Keeps one label's values to well-formed words and a bounded number of them.

    A value that does not match ``pattern``, or a new value once ``limit``
    distinct values have been seen, becomes ``fallback``.  Values already
    seen are accepted with one set lookup, the common case per request.
    """

    def __init__(self, pattern: str, fallback: str, limit: int) -> None:
        self._pattern = re.compile(pattern)
        self._fallback = fallback
        self._limit = limit
        #: Values accepted so far (per instance: no module-level state).
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit or not self._pattern.fullmatch(value):
            return self._fallback
        self._seen.add(value)
        return value


class RelayMetrics:
    """The relay's counters, gauges and histograms, in a registry of their own."""

    #: The media type of ``render()``'s output.
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, process_metrics: bool = True) -> None:
        """``process_metrics`` adds ``process_*`` (RSS, CPU, open fds) from /proc:
        memory is the number an operator of a streaming proxy watches first."""
        self.registry = CollectorRegistry()
        r = self.registry
        self._operation = _Label(r"[A-Za-z]{1,64}", "Unknown", 200)
        self._kind = _Label(r"[A-Za-z][A-Za-z0-9_]{0,31}", "other", 50)
        self._code = _Label(r"[A-Za-z][A-Za-z0-9]{0,63}", "Other", 100)
        self._name = _Label(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}", "other", 100)

        self._requests = Counter(
            "s3relay_requests",
            "Requests answered, by S3 operation, method and status.",
            ["operation", "method", "status"],
            registry=r,
        )
        self._duration = Histogram(
            "s3relay_request_duration_seconds",
            "Time from a request's headers to the end of its response.",
            ["operation"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._received = Counter(
            "s3relay_received_bytes", "Request body bytes received from clients.", registry=r
        )
        self._sent = Counter(
            "s3relay_sent_bytes", "Response body bytes sent to clients.", registry=r
        )
        self._request_body = Histogram(
            "s3relay_request_body_bytes",
            "Size of request bodies (requests with a body).",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self._response_body = Histogram(
            "s3relay_response_body_bytes",
            "Size of response bodies (responses with a body).",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self._in_flight = Gauge(
            "s3relay_requests_in_flight", "Requests started and not yet finished.", registry=r
        )
        self._open_connections = Gauge(
            "s3relay_open_connections", "Client connections open now.", registry=r
        )
        self._connections = Counter(
            "s3relay_connections", "Client connections accepted.", registry=r
        )
        self._upstream_latency = Histogram(
            "s3relay_upstream_latency_seconds",
            "Time from starting an upstream request to its response headers, by upstream "
            "([upstream] is 'default', [upstream:NAME] is NAME).",
            ["upstream"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        #: The latency histogram's child by upstream name (a few, from the config).
        self._latency_of: dict[str, Any] = {}
        self._upstream_errors = Counter(
            "s3relay_upstream_errors",
            "Upstream requests that got no (complete) response, by kind of failure and upstream.",
            ["kind", "upstream"],
            registry=r,
        )
        self._refusals = Counter(
            "s3relay_refusals",
            "Requests the relay refused itself, by S3 error code.",
            ["code"],
            registry=r,
        )
        self._admission_refusals = Counter(
            "s3relay_admission_refusals",
            "Requests refused by an admission rule (network, client_network, host,"
            " relay_rate, client_rate, relay_concurrency, client_concurrency).",
            ["rule"],
            registry=r,
        )
        self._rule = _Label(r"[a-z][a-z_]{0,31}", "other", 20)
        self._tls_failures = Counter(
            "s3relay_tls_handshake_failures", "Client TLS handshakes that failed.", registry=r
        )
        self._worker_restarts = Counter(
            "s3relay_worker_restarts",
            "Worker processes the supervisor restarted after they exited ([server] workers).",
            registry=r,
        )
        self._decryption_failures = Counter(
            "s3relay_decryption_failures",
            "Encrypted objects whose stored bytes or key failed to authenticate on a read "
            "([encryption]); the client connection was aborted or the read refused.",
            registry=r,
        )
        self._certificate_expiry = Gauge(
            "s3relay_tls_certificate_expiry_timestamp_seconds",
            "When a listener's served TLS certificate expires (Unix time).",
            ["listener"],  # a labelled gauge: absent, not 0, without TLS
            registry=r,
        )
        self._credentials_expiry = Gauge(
            "s3relay_credentials_expiry_timestamp_seconds",
            "When a credential set's current credentials expire (Unix time).",
            ["name"],
            registry=r,
        )
        self._refresh_failures = Counter(
            "s3relay_credential_refresh_failures",
            "Failed attempts to refresh a credential set.",
            ["name"],
            registry=r,
        )
        self._source_state = Gauge(
            "s3relay_credential_source_circuit_state",
            "Circuit breaker of a credential set's source: 0 closed, 1 half-open, 2 open.",
            ["name"],
            registry=r,
        )
        Info("s3relay_build", "The running s3relay.", registry=r).info({"version": __version__})
        if process_metrics:
            ProcessCollector(registry=r)

    # -- the request path -------------------------------------------------

    def request_started(self) -> None:
        """A request's headers arrived and it was dispatched."""
        self._in_flight.inc()

    def request_finished(
        self,
        operation: str,
        method: str,
        status: int,
        duration: float,
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        """A request ended, answered or not; call once per ``request_started``.

        ``status`` is the status sent (0 if the connection was lost before a
        response: it shows up as ``status="0"``); ``bytes_in``/``bytes_out``
        count body bytes only.  Body sizes are observed only when non-zero, so
        the size histograms describe transfers, not the many empty GET bodies.
        """
        self._in_flight.dec()
        status_label = str(status) if 100 <= status <= 599 else ("0" if status == 0 else "other")
        operation = self._operation(operation)
        self._requests.labels(
            operation, method if method in METHODS else "OTHER", status_label
        ).inc()
        self._duration.labels(operation).observe(max(duration, 0.0))
        if bytes_in > 0:
            self._received.inc(bytes_in)
            self._request_body.observe(bytes_in)
        if bytes_out > 0:
            self._sent.inc(bytes_out)
            self._response_body.observe(bytes_out)

    def connection_opened(self) -> None:
        self._open_connections.inc()
        self._connections.inc()

    def connection_closed(self) -> None:
        self._open_connections.dec()

    def upstream_response(self, duration: float, upstream: str = "default") -> None:
        """The upstream's response headers arrived ``duration`` seconds after the
        request started (for a PUT that includes sending the body)."""
        child = self._latency_of.get(upstream)
        if child is None:  # labels() costs more than the observation, every request
            child = self._latency_of[upstream] = self._upstream_latency.labels(upstream)
        child.observe(max(duration, 0.0))

    def upstream_error(self, kind: str, upstream: str = "default") -> None:
        """An upstream request failed: ``kind`` is a short word such as
        ``connect``, ``dns``, ``timeout``, ``tls``, ``response``, ``body``,
        ``retried`` (a connection died unanswered and the request went again)."""
        self._upstream_errors.labels(self._kind(kind), upstream).inc()

    def refused(self, code: str) -> None:
        """The relay refused a request with S3 error ``code`` (in addition to
        ``request_finished``, which counts it by status)."""
        self._refusals.labels(self._code(code)).inc()

    def admission_refused(self, rule: str) -> None:
        """A request was refused by admission ``rule`` (``admission``): which
        network, Host or rate rule, beyond the S3 code ``refused`` counts."""
        self._admission_refusals.labels(self._rule(rule)).inc()

    def worker_restarted(self) -> None:
        self._worker_restarts.inc()

    def decryption_failed(self) -> None:
        self._decryption_failures.inc()

    def tls_handshake_failed(self) -> None:
        self._tls_failures.inc()

    def certificate_expiry(self, unix_time: float) -> None:
        """The served certificate (at startup, after a reload) expires at ``unix_time``."""
        self._certificate_expiry.labels("client").set(unix_time)

    # -- credentials --------------------------------------------------------

    def credentials_expiry(self, name: str, unix_time: float) -> None:
        """Credential set ``name`` now expires at ``unix_time``, so an alert can
        fire before it does rather than when requests start failing."""
        self._credentials_expiry.labels(self._name(name)).set(unix_time)

    def credential_refresh_failed(self, name: str) -> None:
        self._refresh_failures.labels(self._name(name)).inc()

    def credential_source_state(self, name: str, state: int) -> None:
        """The source's circuit breaker moved to ``state`` (0 closed, 1 half-open, 2 open)."""
        self._source_state.labels(self._name(name)).set(state)

    # -- exposition ---------------------------------------------------------

    def render(self) -> bytes:
        """Everything above in the Prometheus text format (``content_type``)."""
        return generate_latest(self.registry)
