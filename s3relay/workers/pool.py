# -*- test-case-name: tests.integration.test_workers -*-
"""The worker processes of ``[server] workers``, kept running on one shared socket.

``WorkerPool`` is the supervisor's service: it binds the client listener
once and never accepts on it, starts ``count`` workers on it (``process``),
restarts one that exits (doubling backoff, then giving up so that systemd's
``Restart=`` takes over), checks a new config before passing SIGHUP on, and
passes SIGTERM on and waits.  It answers for the workers as a whole: the
``workers`` readiness check here, their metrics and own checks from
``reports``.  Why the supervisor works this way is ``supervisor``'s
docstring; wiring the pool to the management site is ``make_supervisor``'s.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3relay.access.ratelimit import WORKER_ENV, WORKERS_ENV
from s3relay.config import Config, ConfigError, load_config
from s3relay.listen.endpoints import tls_options
from s3relay.workers.link import CONTROL_IN, CONTROL_OUT, LISTEN_FD
from s3relay.workers.metricsum import Totals, parse
from s3relay.workers.process import PRIVATE_ENV, WorkerProcess, worker_command
from s3relay.workers import reports

log = Logger(namespace="s3relay")

#: Seconds before the first restart of a worker; doubles per failure in a row.
BACKOFF_FIRST = 0.5
#: Longest wait between restarts.
BACKOFF_MAX = 30.0
#: A worker that listened this long counts as healthy: its failure count resets.
STABLE_AFTER = 30.0
#: Failures in a row (exits before listening or soon after) before giving up.
MAX_FAILURES = 6
#: Seconds between asking every worker for its readiness checks.
READINESS_POLL = 2.0
#: Seconds the workers have to finish a reload before READY=1 goes out anyway.
RELOAD_TIMEOUT = 60.0
#: Seconds past ``shutdown_grace`` before workers still running are killed.
STOP_MARGIN = 10.0


def limits_below(config: Config, count: int) -> list[str]:
    """The limits of ``config`` that ``count`` workers cannot split without
    exceeding them: each worker's share is at least 1 (``ratelimit.Share``),
    so a limit below ``count`` acts as ``count`` relay-wide."""
    scopes = [("[server]", config.server.admission.limits)]
    scopes += [(f"[client:{name}]", client.admission.limits)
               for name, client in sorted(config.clients.items())]
    if config.anonymous is not None:
        scopes.append(("[anonymous]", config.anonymous.admission.limits))
    found = []
    connections = config.server.limits.max_connections
    if 1 <= connections < count:
        found.append(f"[server] max_connections = {connections}")
    for scope, limits in scopes:
        if limits.rate is not None and limits.burst < count:
            found.append(f"{scope} burst = {limits.burst:g}")
        if limits.max_concurrent is not None and 1 <= limits.max_concurrent < count:
            found.append(f"{scope} max_concurrent_requests = {limits.max_concurrent}")
    return found


def warn_limits_below(config: Config, count: int) -> None:
    below = limits_below(config, count)
    if below:
        log.warn("limits below workers = {count} act as {count} for the relay (each worker"
                 " takes at least 1): {limits}", count=count, limits=", ".join(below))


class _Refuse(Protocol):
    def connectionMade(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


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
        restarted: Callable[[], object] = lambda: None,
    ) -> None:
        #: Told of each restart of a worker (``s3relay_worker_restarts_total``).
        self._restarted = restarted
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
        self.workers: dict[int, WorkerProcess] = {}
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
        self._reloading: set[WorkerProcess] = set()
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
        warn_limits_below(self.config, self.count)
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
        worker = WorkerProcess(self, index)
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        # Who it is, and how many share the relay's limits (``ratelimit.Share``).
        env[WORKER_ENV], env[WORKERS_ENV] = str(index), str(self.count)
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

    def notified(self, worker: WorkerProcess, message: bytes) -> None:
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
        return reports.worker_checks(self.workers, self.now())

    def ended(self, worker: WorkerProcess, reason: Failure) -> None:
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
        self._restarted()
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
        return reports.collect_metrics(list(self.workers.values()), self._retired, own,
                                       self._reactor)

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
        warn_limits_below(config, self.count)
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
