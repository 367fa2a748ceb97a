# -*- test-case-name: tests.integration.test_workers -*-
"""``[server] workers = N``: one supervisor, N relay processes on one listening socket.

One Twisted reactor uses one core.  With ``workers`` above 1 the process
systemd starts (``twistd -n s3relay --config FILE``) serves no request
itself; like nginx's master or gunicorn's arbiter it:

* binds the client listener (``tcp:``, ``ssl:``, a ``systemd:`` socket) once
  and passes that one socket to N workers, each
  ``twistd -n s3relay --config FILE --worker I`` (``workerlink``).  All of
  them accept from the same kernel queue: a worker that is busy simply
  accepts less, a worker that dies loses no queued connection, port 443
  from socket activation needs no capability, and the socket stays bound
  while a worker restarts.  (SO_REUSEPORT would give each worker its own
  queue, filled by a hash whatever that worker's load, dropping the queue of
  a worker that dies, and cannot share an inherited systemd socket.)
* tells each worker its index and N (``S3RELAY_WORKER``, ``S3RELAY_WORKERS``),
  so that each enforces its share of the relay-wide limits (``rate``,
  ``burst``, ``max_concurrent_requests``, ``max_connections``:
  ``access.ratelimit.Share``), N fixed until the supervisor restarts;
* tells systemd READY=1 once every worker listens, RELOADING=1/READY=1
  around a reload, STOPPING=1 on shutdown;
* on SIGHUP checks the config itself and, only if it loads, passes SIGHUP on
  to every worker (each reloads as a single process does), so that no
  worker is left on a different config than the others;
* on SIGTERM passes SIGTERM on (each worker drains its connections for
  ``shutdown_grace``) and waits for them, SIGKILL after the grace and a margin;
* restarts a worker that exits on its own, after a backoff that doubles
  with each failure in a row, and gives up (exit status 1, so that systemd's
  ``Restart=on-failure`` takes over) when one keeps failing before it listens;
* serves the one management site: ``/metrics`` sums every worker's registry
  (``metricsum``), ``/readyz`` is not ready while any worker is down or
  one of a worker's own checks (upstream, credentials) fails, as it last
  reported them (asked every ``READINESS_POLL`` seconds).

Workers write their log lines to the supervisor's stdout, each with a
``worker`` field (``logs``).

The parts: ``pool`` (``WorkerPool``: the workers' lifecycle on the shared
socket), ``process`` (one worker process and its control pipe), ``reports``
(their metrics and readiness, put together); here ``make_supervisor`` wires
the pool to the management site and to systemd.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService

from s3relay.config import Config
from s3relay.listen.endpoints import listen_endpoint
from s3relay.ops.management import CollectedMetrics, Readiness, make_management_site
from s3relay.ops.metrics import RelayMetrics
from s3relay.ops.systemd import Listeners, StoppingNotifier
from s3relay.workers.pool import WorkerPool


def make_supervisor(
    path: str,
    config: Config,
    reactor: Any,
    notify: Callable[[bytes], object],
    parent_argv: Sequence[str] = (),
) -> IService:
    """The service of a relay with ``workers`` above 1 (see module docstring)."""
    metrics = RelayMetrics()
    # Built now, so that a bad listener or TLS file stops startup with one line.
    endpoint = listen_endpoint(reactor, config.server.listen, tls=config.server.tls)
    metrics_endpoint = config.metrics_listen and listen_endpoint(
        reactor, config.metrics_listen, "metrics"
    )
    service = MultiService()
    gate: list[bool] = []

    def all_ready() -> None:
        gate.append(True)
        if listeners.ready or not metrics_endpoint:
            notify(b"READY=1\nSTATUS=listening")

    def management_bound() -> None:
        if gate:
            notify(b"READY=1\nSTATUS=listening")

    listeners = Listeners(management_bound)
    pool = WorkerPool(path, config, endpoint, reactor, notify, all_ready, parent_argv,
                      restarted=metrics.worker_restarted)
    pool.setServiceParent(service)
    if metrics_endpoint:
        readiness = Readiness()
        readiness.add("workers", pool.check)
        readiness.add("worker-checks", pool.worker_checks)
        resource = CollectedMetrics(lambda: pool.collect(metrics.render()), metrics.content_type)
        management = make_management_site(metrics, readiness, reactor, resource)
        StreamServerEndpointService(
            listeners.watch(metrics_endpoint), management
        ).setServiceParent(service)
    StoppingNotifier(notify).setServiceParent(service)
    return service
