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
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, Callable, Sequence

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3relay.config import Config, ConfigError, load_config
from s3relay.listen.endpoints import listen_endpoint, tls_options
from s3relay.ops.management import CollectedMetrics, Readiness, make_management_site
from s3relay.ops.metrics import RelayMetrics
from s3relay.ops.systemd import Listeners, StoppingNotifier
from s3relay.workers.link import CONTROL_IN, CONTROL_OUT, LISTEN_FD, Frames, frame
from s3relay.workers.metricsum import Totals, parse

log = Logger(namespace="s3relay")

#: Seconds before the first restart of a worker; doubles per failure in a row.
BACKOFF_FIRST = 0.5
#: Longest wait between restarts.
BACKOFF_MAX = 30.0
#: A worker that listened this long counts as healthy: its failure count resets.
STABLE_AFTER = 30.0
#: Failures in a row (exits before listening or soon after) before giving up.
MAX_FAILURES = 6
#: Seconds a worker has to answer a metrics request (else its last answer counts).
METRICS_TIMEOUT = 5.0
#: Seconds between asking every worker for its readiness checks.
READINESS_POLL = 2.0
#: A readiness report older than this counts as "not ready".
READINESS_STALE = 10.0
#: Seconds the workers have to finish a reload before READY=1 goes out anyway.
RELOAD_TIMEOUT = 60.0
#: Seconds past ``shutdown_grace`` before workers still running are killed.
STOP_MARGIN = 10.0

#: Environment a worker must not inherit: only the supervisor talks to
#: systemd, and the socket it handed over is the supervisor's.
PRIVATE_ENV = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC")

_TWISTD = "from twisted.scripts.twistd import run; run()"


def worker_command(path: str, index: int, parent_argv: Sequence[str]) -> list[str]:
    """The command line of worker ``index``: twistd in the foreground, the
    supervisor's log options, and ``--worker``."""
    passed = [a for a in parent_argv[1:] if a.startswith(("--logger=", "--logfile="))]
    return [
        sys.executable, "-c", _TWISTD, "--nodaemon", *passed, "--pidfile=",
        "s3relay", "--config", path, "--worker", str(index),
    ]


def _answer_instead(failure: Failure, last: bytes | None) -> bytes | None:
    """A worker that did not answer in time counts with its last page."""
    return last


class _Refuse(Protocol):
    def connectionMade(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


class _Worker(ProcessProtocol):
    """One worker process, as the supervisor sees it."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        #: Seconds (reactor clock) when it reported listening; None before.
        self.listening_since: float | None = None
        self.pid: int | None = None
        self._frames = Frames()
        #: Metrics requests sent, oldest first, each waiting for its answer.
        self.waiting: list[Deferred[bytes | None]] = []
        #: Its last metrics page (kept when it dies: ``Totals.retire``).
        self.last_metrics: bytes | None = None
        #: (when, its /readyz JSON) of its last readiness report.
        self.report: tuple[float, dict[str, Any]] | None = None

    @property
    def ready(self) -> bool:
        return self.listening_since is not None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]

    def send(self, message: bytes) -> None:
        try:
            self.transport.writeToChild(CONTROL_IN, frame(message))  # type: ignore[union-attr]
        except KeyError:  # its pipe closed: it is exiting, processEnded follows
            pass

    def signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)  # type: ignore[union-attr]
        except Exception:  # already gone (ProcessExitedAlready)
            pass

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != CONTROL_OUT:
            return
        try:
            messages = self._frames.feed(data)
        except ValueError as e:
            log.error("worker {index}: bad control message ({error}); stopping it",
                      index=self.index, error=str(e))
            self.signal("KILL")
            return
        for message in messages:
            kind, _, body = message.partition(b" ")
            if kind == b"metrics":
                self.last_metrics = body
                while self.waiting:
                    d = self.waiting.pop(0)
                    if not d.called:  # not timed out
                        d.callback(body)
                        break
            elif kind == b"notify":
                self.pool.notified(self, body)
            elif kind == b"readiness":
                try:
                    report = json.loads(body)
                except ValueError:
                    report = {"ready": False, "checks": {}}
                self.report = (self.pool.now(), report)

    def processEnded(self, reason: Failure) -> None:
        for d in self.waiting:
            if not d.called:
                d.callback(self.last_metrics)
        self.waiting = []
        self.pool.ended(self, reason)


class WorkerPool(Service):
    """The worker processes on the shared listener, kept at ``count``."""

    def __init__(
        self,
        path: str,
        config: Config,
        endpoint: IStreamServerEndpoint,
        reactor: Any,
        notify: Callable[[bytes], object],
        on_all_ready: Callable[[], object],
        parent_argv: Sequence[str] = (),
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        self._path = path
        self.config = config
        #: The client listener, bound here and handed to the workers.
        self._endpoint = endpoint
        self._reactor = reactor
        self._notify = notify
        self._on_all_ready = on_all_ready
        self._argv = list(parent_argv or sys.argv)
        self._exit = exit
        self.count = config.server.workers
        #: The listening port this process bound and never accepts on.
        self._port: IListeningPort | None = None
        #: Workers running (or starting), by index 1..count.
        self.workers: dict[int, _Worker] = {}
        #: Failures in a row per index, for the backoff.
        self._failures: dict[int, int] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        #: Counters of workers that died, so that the sums never go down.
        self._retired = Totals()
        self._stopping = False
        self._gave_up = False
        self._stopped: Deferred[None] | None = None
        self._announced = False
        #: Workers that got SIGHUP and have not reported READY=1 yet.
        self._reloading: set[_Worker] = set()
        self._reload_timer: IDelayedCall | None = None
        self._previous_hup: Any = None
        self._poll = LoopingCall(self._ask_readiness)
        self._poll.clock = reactor

    # -- start ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._previous_hup = signal.signal(signal.SIGHUP, self._hup)
        never = Factory.forProtocol(_Refuse)
        never.noisy = False
        self._endpoint.listen(never).addCallbacks(self._bound, self._unbound)

    def _bound(self, port: IListeningPort) -> None:
        # Only the workers accept: this process never reads the socket.
        port.stopReading()  # type: ignore[attr-defined]
        self._port = port
        log.info("listening on {listen}; starting {count} workers",
                 listen=self.config.server.listen, count=self.count)
        for index in range(1, self.count + 1):
            self._spawn(index)
        self._poll.start(READINESS_POLL, now=False)

    def _unbound(self, failure: Failure) -> None:
        log.failure("cannot listen on {listen}", failure, listen=self.config.server.listen)
        self._give_up()

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if self._stopping or self._port is None:
            return
        worker = _Worker(self, index)
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        env["S3RELAY_WORKER"] = str(index)
        command = worker_command(self._path, index, self._argv)
        fd = self._port.fileno()  # type: ignore[attr-defined]
        try:
            self._reactor.spawnProcess(
                worker, command[0], command, env=env,
                childFDs={CONTROL_IN: "w", 1: 1, 2: 2, LISTEN_FD: fd, CONTROL_OUT: "r"},
            )
        except OSError as e:
            log.error("cannot start worker {index}: {error}", index=index, error=str(e))
            self._failed(index)
            return
        self.workers[index] = worker
        log.info("worker {index} started (pid {pid})", index=index, pid=worker.pid)

    # -- what workers report ----------------------------------------------------

    def notified(self, worker: _Worker, message: bytes) -> None:
        if not message.startswith(b"READY=1"):
            return
        if not worker.ready:
            worker.listening_since = self._reactor.seconds()
            log.info("worker {index} (pid {pid}) listening", index=worker.index, pid=worker.pid)
            worker.send(b"readiness")
            self._check_all_ready()
        elif worker in self._reloading:
            self._reloading.discard(worker)
            self._check_reloaded()

    def _check_all_ready(self) -> None:
        if not self._announced and self.all_ready:
            self._announced = True
            self._on_all_ready()

    @property
    def all_ready(self) -> bool:
        ready = [w for w in self.workers.values() if w.ready]
        return len(ready) == self.count

    def check(self) -> tuple[bool, str]:
        """The ``workers`` readiness check: every worker up and listening."""
        ready = sum(w.ready for w in self.workers.values())
        return ready == self.count, f"{ready} of {self.count} workers listening"

    def now(self) -> float:
        return float(self._reactor.seconds())

    def _ask_readiness(self) -> None:
        for worker in self.workers.values():
            if worker.ready:
                worker.send(b"readiness")

    def worker_checks(self) -> tuple[bool, str]:
        """The ``worker-checks`` readiness check: each worker's own checks
        (upstream, credentials...) as it last reported them."""
        now = self.now()
        problems = []
        for index, worker in sorted(self.workers.items()):
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

    def ended(self, worker: _Worker, reason: Failure) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        self._reloading.discard(worker)
        self._check_reloaded()
        if worker.last_metrics:
            try:
                self._retired.add(parse(worker.last_metrics), monotonic_only=True)
            except ValueError:
                pass
        if self._stopping:
            log.info("worker {index} (pid {pid}) stopped", index=worker.index, pid=worker.pid)
            if not self.workers and self._stopped is not None:
                self._stopped.callback(None)
            return
        stable = (
            worker.listening_since is not None
            and self._reactor.seconds() - worker.listening_since >= STABLE_AFTER
        )
        if stable:
            self._failures[worker.index] = 0
        log.error("worker {index} (pid {pid}) exited unexpectedly: {why}",
                  index=worker.index, pid=worker.pid, why=reason.getErrorMessage())
        self._failed(worker.index)

    def _failed(self, index: int) -> None:
        failures = self._failures.get(index, 0) + 1
        self._failures[index] = failures
        if failures > MAX_FAILURES:
            log.critical("worker {index} failed {count} times in a row; giving up",
                         index=index, count=failures - 1)
            self._give_up()
            return
        delay = min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX)
        log.warn("restarting worker {index} in {delay}s (failure {count} in a row)",
                 index=index, delay=delay, count=failures)
        self._restarts[index] = self._reactor.callLater(delay, self._spawn, index)

    def _give_up(self) -> None:
        """Stop everything and exit with status 1: systemd restarts the unit."""
        if self._gave_up:
            return
        self._gave_up = True
        self._reactor.addSystemEventTrigger("after", "shutdown", self._exit, 1)
        if self._reactor.running:
            self._reactor.stop()
        else:
            self._reactor.callWhenRunning(self._reactor.stop)

    # -- metrics ------------------------------------------------------------------

    def collect(self, own: bytes) -> Deferred[bytes]:
        """One metrics page: ``own`` (this process), every worker's and the
        retired counters, added up."""
        asked: list[Deferred[bytes | None]] = []
        for worker in list(self.workers.values()):
            if not worker.ready:
                asked.append(succeed(worker.last_metrics))
                continue
            d: Deferred[bytes | None] = Deferred()
            worker.waiting.append(d)
            worker.send(b"metrics")
            fallback = worker.last_metrics
            d.addTimeout(METRICS_TIMEOUT, self._reactor)
            d.addErrback(_answer_instead, fallback)
            asked.append(d)

        def add_up(pages: list[bytes | None]) -> bytes:
            totals = self._retired.copy()
            for page in (own, *pages):
                if page:
                    try:
                        totals.add(parse(page))
                    except ValueError as e:
                        log.error("unreadable metrics from a worker: {error}", error=str(e))
            return totals.render()

        return gatherResults(asked).addCallback(add_up)

    # -- reload ---------------------------------------------------------------------

    def _hup(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """Check the config; if it loads, have every worker reload it."""
        self._notify(b"RELOADING=1")
        try:
            config = load_config(self._path)
            tls_options(config.server.listen, config.server.tls)
        except ConfigError as e:
            log.error("reload refused, the workers keep the running config: {error}",
                      error=str(e))
            self._notify(b"READY=1")
            return False
        old = self.config.server
        if (config.server.listen, config.server.workers, config.metrics_listen) != (
            old.listen, old.workers, self.config.metrics_listen,
        ):
            log.warn("reload: listener and workers changes take effect at the next restart")
        self.config = config
        self._reloading = {w for w in self.workers.values() if w.ready}
        log.info("reload: passing SIGHUP to {count} workers", count=len(self._reloading))
        for worker in self._reloading:
            worker.signal("HUP")
        if self._reload_timer is not None and self._reload_timer.active():
            self._reload_timer.cancel()
        self._reload_timer = self._reactor.callLater(RELOAD_TIMEOUT, self._reload_overdue)
        self._check_reloaded()
        return True

    def _check_reloaded(self) -> None:
        if self._reload_timer is not None and not self._reloading:
            if self._reload_timer.active():
                self._reload_timer.cancel()
            self._reload_timer = None
            log.info("reload: every worker reloaded")
            self._notify(b"READY=1")

    def _reload_overdue(self) -> None:
        log.warn("reload: {count} workers did not confirm in {seconds}s",
                 count=len(self._reloading), seconds=RELOAD_TIMEOUT)
        self._reloading = set()
        self._check_reloaded()

    # -- stop -------------------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        super().stopService()
        signal.signal(signal.SIGHUP, self._previous_hup or signal.SIG_DFL)
        self._stopping = True
        if self._poll.running:
            self._poll.stop()
        for timer in self._restarts.values():
            if timer.active():
                timer.cancel()
        self._restarts.clear()
        done: Deferred[None] = Deferred()
        if self.workers:
            self._stopped = done
            log.info("stopping {count} workers", count=len(self.workers))
            for worker in self.workers.values():
                worker.signal("TERM")
            grace = self.config.server.limits.shutdown_grace + STOP_MARGIN
            killer = self._reactor.callLater(grace, self._kill_all)
            done.addBoth(lambda r: (killer.cancel() if killer.active() else None, r)[1])
        else:
            done.callback(None)
        port = self._port

        def close(result: None) -> Any:
            return port.stopListening() if port is not None else result

        return done.addCallback(close)

    def _kill_all(self) -> None:
        log.warn("{count} workers still running after the grace: killing them",
                 count=len(self.workers))
        for worker in self.workers.values():
            worker.signal("KILL")


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
    pool = WorkerPool(path, config, endpoint, reactor, notify, all_ready, parent_argv)
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
