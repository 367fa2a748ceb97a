# -*- test-case-name: tests.unit.test_management -*-
"""Tests for s3relay.ops.metrics and s3relay.ops.management.

Metrics are read back the way Prometheus reads them, by parsing the text
exposition, so a renamed metric or a wrong label fails here and not on a
dashboard.  The HTTP endpoints are driven with a real treq Agent over
in-memory transports (StubTreq), and the Site itself over a StringTransport.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import Site
from zope.interface import implementer

from s3relay.ops.management import Readiness, UpstreamHealth, make_management_site
from s3relay.ops.metrics import DURATION_BUCKETS, SIZE_BUCKETS, RelayMetrics

T = TypeVar("T")
GiB = 2**30


# -- helpers -----------------------------------------------------------------


def samples(metrics: RelayMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, by (sample name, labels).

    Bucket edges are normalised to Python's float spelling ("4294967296.0",
    "inf"): the exposition writes large ones in Go's ("4.294967296e+09").
    """
    text = metrics.render().decode("utf-8")
    return {
        (s.name, frozenset((k, str(float(v)) if k == "le" else v) for k, v in s.labels.items())): (
            s.value
        )
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: RelayMetrics, sample: str, /, **labels: str) -> float:
    """One sample's value; KeyError (a failure) if it is not exposed."""
    return samples(metrics)[(sample, frozenset(labels.items()))]


def label_values(metrics: RelayMetrics, name: str, label: str) -> set[str]:
    return {dict(k)[label] for (n, k) in samples(metrics) if n == name and label in dict(k)}


def bucket_edges(metrics: RelayMetrics, histogram: str) -> list[float]:
    edges = {float(dict(k)["le"]) for (n, k) in samples(metrics) if n == histogram + "_bucket"}
    return sorted(edges)


def fired(d: Deferred[T]) -> T:
    """The result of a Deferred that must already have fired."""
    results: list[T] = []
    failures: list[Failure] = []
    d.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    assert results, "the Deferred has not fired"
    return results[0]


@implementer(ILogObserver)
class Events:
    """A log observer that keeps every event."""

    def __init__(self) -> None:
        self.seen: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.seen.append(event)


class Management:
    """A management site over fresh metrics and readiness, and a client for it."""

    def __init__(self) -> None:
        self.metrics = RelayMetrics()
        self.readiness = Readiness()
        self.site = make_management_site(self.metrics, self.readiness, MemoryReactorClock())
        #: treq's module functions (request, content...), set dynamically: Any for mypy.
        self.client: Any = StubTreq(self.site.resource)

    def call(self, method: str, path: str) -> tuple[int, Headers, bytes]:
        response: Any = fired(self.client.request(method, "http://127.0.0.1:9090" + path))
        body: bytes = fired(self.client.content(response))
        return response.code, response.headers, body

    def get_json(self, path: str) -> tuple[int, Any]:
        code, headers, body = self.call("GET", path)
        assert headers.getRawHeaders(b"content-type") == [b"application/json"]
        return code, json.loads(body)


@pytest.fixture
def mgmt() -> Management:
    return Management()


# -- RelayMetrics --------------------------------------------------------------


def test_request_counters_gauge_and_duration() -> None:
    m = RelayMetrics()
    m.request_started()
    m.request_started()
    assert value(m, "s3relay_requests_in_flight") == 2
    m.request_finished("GetObject", "GET", 200, 0.2, 0, 5000)
    m.request_finished("GetObject", "GET", 200, 3.0, 0, 7000)
    assert value(m, "s3relay_requests_in_flight") == 0
    labels = {"operation": "GetObject", "method": "GET", "status": "200"}
    assert value(m, "s3relay_requests_total", **labels) == 2
    assert value(m, "s3relay_sent_bytes_total") == 12000
    assert value(m, "s3relay_received_bytes_total") == 0
    hist = "s3relay_request_duration_seconds"
    assert value(m, hist + "_count", operation="GetObject") == 2
    assert value(m, hist + "_sum", operation="GetObject") == pytest.approx(3.2)
    assert value(m, hist + "_bucket", operation="GetObject", le="0.25") == 1
    assert value(m, hist + "_bucket", operation="GetObject", le="2.5") == 1
    assert value(m, hist + "_bucket", operation="GetObject", le="5.0") == 2
    # A clock step backwards must not subtract from the histogram's sum.
    m.request_finished("PutObject", "PUT", 200, -5.0, 10, 0)
    assert value(m, hist + "_sum", operation="PutObject") == 0
    assert value(m, hist + "_bucket", operation="PutObject", le="0.001") == 1


def test_body_sizes_are_observed_for_transfers_only() -> None:
    m = RelayMetrics()
    m.request_finished("PutObject", "PUT", 200, 40.0, 5 * GiB, 0)
    m.request_finished("GetObject", "GET", 200, 0.01, 0, 3000)
    m.request_finished("HeadObject", "HEAD", 200, 0.01, 0, 0)
    assert value(m, "s3relay_received_bytes_total") == 5 * GiB
    up, down = "s3relay_request_body_bytes", "s3relay_response_body_bytes"
    assert value(m, up + "_count") == 1
    assert value(m, up + "_bucket", le=str(float(4 * GiB))) == 0
    assert value(m, up + "_bucket", le=str(float(16 * GiB))) == 1
    assert value(m, down + "_count") == 1
    assert value(m, down + "_bucket", le="1024.0") == 0
    assert value(m, down + "_bucket", le="4096.0") == 1


def test_bucket_edges_reach_30_minutes_and_64_GiB() -> None:
    m = RelayMetrics()
    m.request_finished("GetObject", "GET", 200, 1.0, 1, 1)
    m.upstream_response(1.0)
    for histogram in ("s3relay_request_duration_seconds", "s3relay_upstream_latency_seconds"):
        edges = bucket_edges(m, histogram)
        assert edges[0] == 0.001
        assert edges[-2:] == [1800.0, float("inf")]
        assert edges[:-1] == list(DURATION_BUCKETS)
    for histogram in ("s3relay_request_body_bytes", "s3relay_response_body_bytes"):
        edges = bucket_edges(m, histogram)
        assert edges[0] == 1024.0
        assert edges[-2:] == [64.0 * GiB, float("inf")]
        assert edges[:-1] == list(SIZE_BUCKETS)
        assert all(b == a * 4 for a, b in zip(edges[:-2], edges[1:-1]))


def test_label_values_are_bounded() -> None:
    m = RelayMetrics()
    m.request_finished("GetObject", "BREW", 200, 0.1, 0, 0)
    m.request_finished("GetObject", "get", 200, 0.1, 0, 0)
    m.request_finished("my-bucket/secret.txt", "GET", 200, 0.1, 0, 0)
    m.request_finished("A" * 65, "GET", 999, 0.1, 0, 0)
    m.request_finished("ListBuckets", "GET", 0, 0.1, 0, 0)
    m.upstream_error("connection refused by 10.1.2.3")
    m.refused("<Code>")
    m.credentials_expiry("main key\n", 1.0)
    assert label_values(m, "s3relay_requests_total", "method") == {"OTHER", "GET"}
    assert label_values(m, "s3relay_requests_total", "operation") == {
        "GetObject",
        "Unknown",
        "ListBuckets",
    }
    assert label_values(m, "s3relay_requests_total", "status") == {"200", "other", "0"}
    assert label_values(m, "s3relay_upstream_errors_total", "kind") == {"other"}
    assert label_values(m, "s3relay_refusals_total", "code") == {"Other"}
    assert label_values(m, "s3relay_credentials_expiry_timestamp_seconds", "name") == {"other"}
    assert b"secret" not in m.render() and b"10.1.2.3" not in m.render()


def test_the_number_of_operation_values_is_capped() -> None:
    """Well-formed names still cannot grow the series count without bound."""
    m = RelayMetrics()
    for n in range(300):
        name = "Op" + "".join(chr(ord("A") + int(digit)) for digit in str(n))
        m.request_finished(name, "GET", 200, 0, 0, 0)
    operations = label_values(m, "s3relay_requests_total", "operation")
    assert len(operations) == 201
    labels = {"operation": "Unknown", "method": "GET", "status": "200"}
    assert value(m, "s3relay_requests_total", **labels) == 100


def test_connections_upstream_refusals_and_tls() -> None:
    m = RelayMetrics()
    for _ in range(3):
        m.connection_opened()
    m.connection_closed()
    m.upstream_response(0.3)
    m.upstream_error("connect")
    m.upstream_error("connect")
    m.upstream_error("timeout")
    m.refused("SignatureDoesNotMatch")
    m.refused("AccessDenied")
    m.refused("AccessDenied")
    m.tls_handshake_failed()
    certificate = "s3relay_tls_certificate_expiry_timestamp_seconds"
    with pytest.raises(KeyError):  # no TLS: absent, not 0
        value(m, certificate, listener="client")
    m.certificate_expiry(1_800_000_000.0)
    assert value(m, certificate, listener="client") == 1_800_000_000.0
    assert value(m, "s3relay_open_connections") == 2
    assert value(m, "s3relay_connections_total") == 3
    m.upstream_error("connect", "west")
    default = {"upstream": "default"}
    assert value(m, "s3relay_upstream_latency_seconds_count", **default) == 1
    assert value(m, "s3relay_upstream_latency_seconds_bucket", le="0.25", **default) == 0
    assert value(m, "s3relay_upstream_latency_seconds_bucket", le="0.5", **default) == 1
    assert value(m, "s3relay_upstream_errors_total", kind="connect", **default) == 2
    assert value(m, "s3relay_upstream_errors_total", kind="timeout", **default) == 1
    assert value(m, "s3relay_upstream_errors_total", kind="connect", upstream="west") == 1
    assert value(m, "s3relay_refusals_total", code="SignatureDoesNotMatch") == 1
    assert value(m, "s3relay_refusals_total", code="AccessDenied") == 2
    assert value(m, "s3relay_tls_handshake_failures_total") == 1


def test_credentials_metrics() -> None:
    m = RelayMetrics()
    m.credentials_expiry("main", 1_800_000_000.0)
    m.credentials_expiry("main", 1_800_003_600.0)
    m.credential_refresh_failed("client:alice")
    expiry = "s3relay_credentials_expiry_timestamp_seconds"
    assert value(m, expiry, name="main") == 1_800_003_600.0
    assert value(m, "s3relay_credential_refresh_failures_total", name="client:alice") == 1


def test_each_instance_has_its_own_registry() -> None:
    first, second = RelayMetrics(), RelayMetrics(process_metrics=False)
    first.refused("AccessDenied")
    assert value(first, "s3relay_refusals_total", code="AccessDenied") == 1
    assert ("s3relay_refusals_total", frozenset({("code", "AccessDenied")})) not in samples(second)
    assert not [name for name in samples(second) if name[0].startswith("process_")]
    assert value(first, "s3relay_build_info", version=__import__("s3relay").__version__) == 1
    assert b"s3relay_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)


# -- the management site ---------------------------------------------------------


def test_metrics_endpoint_serves_live_metrics(mgmt: Management) -> None:
    mgmt.metrics.refused("AccessDenied")
    code, headers, body = mgmt.call("GET", "/metrics")
    assert code == 200
    assert headers.getRawHeaders(b"content-type") == [mgmt.metrics.content_type.encode()]
    assert mgmt.metrics.content_type.startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["s3relay_refusals"].samples[0].value == 1
    mgmt.metrics.refused("AccessDenied")
    body = mgmt.call("GET", "/metrics")[2]
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["s3relay_refusals"].samples[0].value == 2


def test_healthz(mgmt: Management) -> None:
    mgmt.readiness.add("config", lambda: (False, "broken"))
    assert mgmt.get_json("/healthz") == (200, {"status": "ok"})


def test_readyz_follows_checks_and_upstream_health(mgmt: Management) -> None:
    clock = Clock()
    clock.advance(1000)
    config_ok = [True]
    health = UpstreamHealth(clock.seconds, window=30.0)
    mgmt.readiness.add("config", lambda: (config_ok[0], "loaded" if config_ok[0] else "bad"))
    mgmt.readiness.add("upstream", health.check)

    code, report = mgmt.get_json("/readyz")
    assert code == 200
    assert report == {
        "ready": True,
        "checks": {
            "config": {"ok": True, "detail": "loaded"},
            "upstream": {"ok": True, "detail": "no upstream traffic yet"},
        },
    }

    config_ok[0] = False
    code, report = mgmt.get_json("/readyz")
    assert (code, report["ready"]) == (503, False)
    assert report["checks"]["config"] == {"ok": False, "detail": "bad"}
    assert report["checks"]["upstream"]["ok"] is True
    config_ok[0] = True
    assert mgmt.get_json("/readyz")[0] == 200

    health.failure(clock.seconds(), "connection refused")
    clock.advance(5)
    code, report = mgmt.get_json("/readyz")
    assert (code, report["ready"]) == (503, False)
    assert report["checks"]["upstream"] == {"ok": False, "detail": "connection refused (5.0 s ago)"}

    health.success(clock.seconds())
    code, report = mgmt.get_json("/readyz")
    assert code == 200
    assert report["checks"]["upstream"] == {"ok": True, "detail": "upstream answered 0.0 s ago"}

    health.failure(clock.seconds(), "timeout")
    clock.advance(30)
    assert mgmt.get_json("/readyz")[0] == 503
    clock.advance(1)  # the failure leaves the window: a drained relay must come back
    code, report = mgmt.get_json("/readyz")
    assert code == 200
    assert report["checks"]["upstream"]["detail"] == "no recent upstream traffic"


def test_upstream_health_asks_the_probe_only_without_recent_traffic() -> None:
    clock = Clock()
    probe_says = [(False, "HEAD / refused")]
    health = UpstreamHealth(clock.seconds, window=10.0, probe=lambda: probe_says[0])
    assert health.check() == (False, "no upstream traffic yet; probe: HEAD / refused")
    probe_says[0] = (True, "HEAD / answered")
    assert health.check() == (True, "no upstream traffic yet; probe: HEAD / answered")
    probe_says[0] = (False, "HEAD / refused")
    health.success(clock.seconds())
    assert health.check()[0] is True
    clock.advance(11)
    assert health.check() == (False, "no recent upstream traffic; probe: HEAD / refused")


def test_a_check_that_raises_means_not_ready(mgmt: Management) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    mgmt.readiness.add("credentials", broken)
    code, report = mgmt.get_json("/readyz")
    assert (code, report["ready"]) == (503, False)
    assert report["checks"]["credentials"]["ok"] is False
    assert "boom" not in report["checks"]["credentials"]["detail"]
    with pytest.raises(ValueError):
        mgmt.readiness.add("credentials", lambda: (True, ""))


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/"), ("GET", "/nope"), ("GET", "/Metrics"), ("GET", "/metrics/x"), ("POST", "/x")],
)
def test_unknown_paths_are_json_404s(mgmt: Management, method: str, path: str) -> None:
    code, headers, body = mgmt.call(method, path)
    assert code == 404
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert json.loads(body) == {"error": "not found"}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
def test_other_methods_are_json_405s(mgmt: Management, method: str, path: str) -> None:
    code, headers, body = mgmt.call(method, path)
    assert code == 405
    assert headers.getRawHeaders(b"allow") == [b"GET, HEAD"]
    assert json.loads(body) == {"error": "method not allowed"}


def test_head_sends_headers_only_and_logs_nothing(mgmt: Management) -> None:
    """A HEAD probe every second must not log twisted.web's "I'll eat it" warning."""
    events = Events()
    get_body = mgmt.call("GET", "/healthz")[2]
    globalLogPublisher.addObserver(events)
    try:
        code, headers, body = mgmt.call("HEAD", "/healthz")
        mgmt.readiness.add("listening", lambda: (False, "not yet"))
        ready_code, _, ready_body = mgmt.call("HEAD", "/readyz")
    finally:
        globalLogPublisher.removeObserver(events)
    assert (code, body) == (200, b"")
    assert headers.getRawHeaders(b"content-length") == [b"%d" % len(get_body)]
    assert (ready_code, ready_body) == (503, b"")
    assert [text for text in map(formatEvent, events.seen) if "HEAD" in text] == []


class Lines:
    """An access log file that keeps what is written to it."""

    def __init__(self) -> None:
        self.written: list[str | bytes] = []

    def write(self, data: str | bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        pass


def serve_once(site: Site) -> bytes:
    """One request through ``site`` over a StringTransport; the raw response."""
    site.doStart()
    site.logFile = Lines()
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert channel is not None
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return transport.value()


def test_the_site_serves_without_an_access_log() -> None:
    site = make_management_site(RelayMetrics(), Readiness(), MemoryReactorClock())
    response = serve_once(site)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b'{"status":"ok"}\n')
    assert site.logFile.written == []
    # The same resource under a stock Site would have logged the scrape.
    stock = Site(site.resource, reactor=MemoryReactorClock())
    serve_once(stock)
    assert len(stock.logFile.written) == 1
