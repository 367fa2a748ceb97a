# -*- test-case-name: tests.integration.test_workers -*-
"""The workers as the supervisor's management site sees them: metrics and readiness.

The supervisor serves one ``/metrics`` and one ``/readyz`` for all of its
workers.  Its page of metrics is every worker's page, asked for over the
control pipe when it is scraped (a worker that does not answer in time
counts with its last page), added to the supervisor's own and to the
counters of workers that died, so that no sum ever goes down.  Its
``worker-checks`` readiness check is each worker's own checks (upstream,
credentials...) as the worker last reported them, a report too old
counting as a failure.  These read what ``WorkerProcess`` keeps; which
workers there are is the pool's (``WorkerPool.collect``,
``WorkerPool.worker_checks``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3relay.workers.metricsum import Totals, parse
from s3relay.workers.process import WorkerProcess

log = Logger(namespace="s3relay")

#: Seconds a worker has to answer a metrics request (else its last answer counts).
METRICS_TIMEOUT = 5.0
#: A readiness report older than this counts as "not ready".
READINESS_STALE = 10.0


def _answer_instead(failure: Failure, last: bytes | None) -> bytes | None:
    """A worker that did not answer in time counts with its last page."""
    return last


def worker_checks(workers: Mapping[int, WorkerProcess], now: float) -> tuple[bool, str]:
    """The ``worker-checks`` readiness check of ``workers`` (by index) at ``now``."""
    problems = []
    for index, worker in sorted(workers.items()):
        if not worker.ready:
            continue  # the "workers" check says so
        if worker.report is None:
            problems.append(f"worker {index}: no report yet")
            continue
        when, report = worker.report
        if now - when > READINESS_STALE:
            problems.append(f"worker {index}: no report for {now - when:.0f}s")
        elif not report.get("ready"):
            failing = [
                f"{name} ({check.get('detail', '')})"
                for name, check in report.get("checks", {}).items()
                if not check.get("ok")
            ]
            problems.append(f"worker {index}: " + ", ".join(failing))
    return not problems, "; ".join(problems) or "every worker's checks pass"


def collect_metrics(workers: Iterable[WorkerProcess], retired: Totals, own: bytes,
                    reactor: Any) -> Deferred[bytes]:
    """One metrics page: ``own`` (this process), every worker's and the
    ``retired`` counters (of workers that died), added up."""
    asked: list[Deferred[bytes | None]] = []
    for worker in workers:
        if not worker.ready:
            asked.append(succeed(worker.last_metrics))
            continue
        d: Deferred[bytes | None] = Deferred()
        worker.waiting.append(d)
        worker.send(b"metrics")
        fallback = worker.last_metrics
        d.addTimeout(METRICS_TIMEOUT, reactor)
        d.addErrback(_answer_instead, fallback)
        asked.append(d)

    def add_up(pages: list[bytes | None]) -> bytes:
        totals = retired.copy()
        for page in (own, *pages):
            if page:
                try:
                    totals.add(parse(page))
                except ValueError as e:
                    log.error("unreadable metrics from a worker: {error}", error=str(e))
        return totals.render()

    return gatherResults(asked).addCallback(add_up)
