# -*- test-case-name: tests.integration.test_workers -*-
"""The supervisor's end of one worker process: its command line and its control pipe.

Each worker of ``[server] workers`` is a child process the supervisor
starts (``worker_command``, without the environment only the supervisor
may use: ``PRIVATE_ENV``) and then talks to over the control pipe that
``link`` describes from the worker's side.  ``WorkerProcess`` is the
supervisor's side of that pipe: it sends requests, reads the framed answers
(a metrics page, a readiness report, what the worker would tell systemd)
and keeps the latest of each, so that the pool (``pool``) deals in workers,
not in bytes on file descriptors.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3relay.workers.link import CONTROL_IN, CONTROL_OUT, Frames, frame

log = Logger(namespace="s3relay")

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


class Pool(Protocol):
    """What a worker process reports to: the pool that started it (``WorkerPool``)."""

    def notified(self, worker: WorkerProcess, message: bytes) -> None:
        """The worker sent what it would tell systemd (``READY=1``...)."""

    def now(self) -> float:
        """Seconds, on the reactor's clock."""

    def ended(self, worker: WorkerProcess, reason: Failure) -> None:
        """The worker process exited."""


class WorkerProcess(ProcessProtocol):
    """One worker process, as the supervisor sees it."""

    def __init__(self, pool: Pool, index: int) -> None:
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
