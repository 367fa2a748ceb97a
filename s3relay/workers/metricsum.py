# -*- test-case-name: tests.integration.test_workers -*-
"""One ``/metrics`` page for several worker processes: their registries summed.

With ``[server] workers = N`` every worker counts its own traffic in its own
``RelayMetrics``; the parent asks each for its text at scrape time and adds
them up here, so that a scraper sees one relay, as it would with one process.
prometheus_client's multiprocess mode would do this through mmap'ed files,
but it is switched on by an environment variable read at import time (global
state), needs a writable directory shared by all processes and cannot
aggregate ``process_*``; the text format is stable and small.

How samples combine: counters, histograms and most gauges add up (requests,
bytes, in-flight requests, open connections, RSS, CPU, fds).  A few gauges do
not: the earliest credential or certificate expiry and process start, the worst circuit
state, the largest fd limit, the build info.  ``*_created`` series are left
out: a sum of several processes has no single creation time.

A worker that dies takes its counters with it; ``Totals.retire`` keeps the
counters and histograms it last reported, so that the sums never go down
(Prometheus would read a drop as a counter reset).  Traffic after its last
report is lost with it.

Pure: nothing from ``twisted.internet``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

#: How a gauge that must not be summed combines across processes.
GAUGE_RULES: dict[str, Callable[[float, float], float]] = {
    "s3relay_credentials_expiry_timestamp_seconds": min,
    "s3relay_tls_certificate_expiry_timestamp_seconds": min,
    "s3relay_credential_source_circuit_state": max,
    "s3relay_build_info": max,
    "process_start_time_seconds": min,
    "process_max_fds": max,
}

#: Family types whose values only grow, kept when their process dies.
MONOTONIC = frozenset({"counter", "histogram", "summary"})

_SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def parse(text: bytes) -> list[Metric]:
    """The metric families of one Prometheus text page (``ValueError`` if garbled)."""
    return list(text_string_to_metric_families(text.decode("utf-8")))


class Totals:
    """Metric families added up sample by sample."""

    def __init__(self) -> None:
        #: Family name -> (documentation, type, unit), in first-seen order.
        self._families: dict[str, tuple[str, str, str]] = {}
        #: Family name -> sample (name, labels) -> combined value.
        self._values: dict[str, dict[_SampleKey, float]] = {}

    def add(self, families: Iterable[Metric], monotonic_only: bool = False) -> None:
        for family in families:
            if family.name.endswith("_created"):
                continue
            if monotonic_only and family.type not in MONOTONIC:
                continue
            described = (family.documentation, family.type, family.unit)
            self._families.setdefault(family.name, described)
            values = self._values.setdefault(family.name, {})
            rule = GAUGE_RULES.get(family.name) if family.type != "counter" else None
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key in values:
                    old = values[key]
                    values[key] = rule(old, sample.value) if rule else old + sample.value
                else:
                    values[key] = sample.value

    def copy(self) -> Totals:
        other = Totals()
        other._families = dict(self._families)
        other._values = {name: dict(values) for name, values in self._values.items()}
        return other

    def collect(self) -> Iterator[Metric]:
        """The families, as a prometheus_client collector yields them."""
        for name, (documentation, kind, unit) in self._families.items():
            family = Metric(name, documentation, kind, unit)
            family.samples = [
                Sample(sample, dict(labels), value)
                for (sample, labels), value in self._values[name].items()
            ]
            yield family

    def render(self) -> bytes:
        """The Prometheus text format (``RelayMetrics.content_type``)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry)
