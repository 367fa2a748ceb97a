# -*- test-case-name: tests.integration.test_workers -*-
"""A worker's side of ``[server] workers``: the inherited socket and the control pipe.

The supervisor (``workers``) starts each worker as
``twistd -n s3relay --config FILE --worker N`` with:

* fd 3: the listening socket the supervisor bound, adopted here
  (``reactor.adoptStreamPort``), so every worker accepts from one kernel
  queue;
* fd 0 (from the supervisor) and fd 4 (to it): the control pipe, framed
  messages (``frame``).  The supervisor sends ``metrics``; the worker answers
  ``metrics <its registry's text>``; to ``readiness`` it answers
  ``readiness <its /readyz JSON>`` (upstream, credentials...).  What the relay would tell systemd
  (READY=1 once listening, RELOADING=1/READY=1 around a SIGHUP reload,
  STOPPING=1) goes to the supervisor as ``notify <message>`` instead: only
  the supervisor talks to systemd.

When the pipe closes the supervisor is gone, and an orphaned worker would
keep a port nobody supervises: the worker then stops as on SIGTERM.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any, Callable

from twisted.internet import stdio
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3relay.compat import accept_one_per_wakeup
from s3relay.config import ConfigError, ServerConfig
from s3relay.listen.endpoints import listen_endpoint
from s3relay.ops.management import Readiness, ReadinessReport
from s3relay.ops.metrics import RelayMetrics

log = Logger(namespace="s3relay")

#: The worker's fds, as the supervisor maps them (``spawnProcess(childFDs=)``).
LISTEN_FD = 3
CONTROL_IN = 0
CONTROL_OUT = 4

#: Largest control message: a metrics page is tens of KiB; garbage is refused.
MAX_FRAME = 16 * 1024 * 1024

_LENGTH = struct.Struct(">I")


def frame(payload: bytes) -> bytes:
    """``payload`` as one control message: a 4-byte big-endian length, then the bytes."""
    return _LENGTH.pack(len(payload)) + payload


class Frames:
    """Splits a control byte stream back into messages (at most ``MAX_FRAME`` each)."""

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        """The messages completed by ``data``; ValueError for an oversized one."""
        self._buffer += data
        messages = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > self._limit:
                raise ValueError(f"control message of {length} bytes")
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            messages.append(bytes(self._buffer[_LENGTH.size : end]))
            del self._buffer[:end]
        return messages


class _AdoptingReactor:
    """The reactor as a worker's listener sees it: listening adopts fd 3.

    ``listen_endpoint`` then builds the same endpoint, TLS options included,
    as in a single process, for ``tcp:``, ``ssl:`` and (as ``tcp:``) ``systemd:``.
    """

    def __init__(self, reactor: Any, fd: int, family: int) -> None:
        self._reactor = reactor
        self._fd = fd
        self._family = family

    def listenTCP(self, port: int, factory: IProtocolFactory, backlog: int = 50,
                  interface: str = "") -> IListeningPort:
        adopted: IListeningPort = self._reactor.adoptStreamPort(self._fd, self._family, factory)
        os.close(self._fd)  # adoptStreamPort duplicated it
        accept_one_per_wakeup(adopted)
        return adopted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def worker_endpoint(
    reactor: Any,
    server: ServerConfig,
    handshake_failed: Callable[[], object],
    fd: int = LISTEN_FD,
) -> IStreamServerEndpoint:
    """The client listener of a worker: the inherited socket ``fd``, TLS as configured."""
    try:
        inherited = socket.socket(fileno=fd)
    except OSError:
        raise ConfigError("server", "listen", f"--worker: fd {fd} is no socket") from None
    family = inherited.family
    inherited.detach()
    description = server.listen
    if description.split(":", 1)[0].strip().lower() == "systemd":
        description = "tcp:0"  # the socket systemd gave the supervisor, as fd 3
    return listen_endpoint(
        _AdoptingReactor(reactor, fd, family), description, tls=server.tls,
        handshake_failed=handshake_failed,
    )


class WorkerLink(Protocol):
    """The worker's end of the control pipe to its supervisor."""

    def __init__(self, reactor: Any, metrics: RelayMetrics) -> None:
        self._reactor = reactor
        self._metrics = metrics
        self._frames = Frames()
        #: This worker's readiness checks, reported to the supervisor's /readyz.
        self.readiness: Readiness | None = None
        #: Set once this process shuts down: the reactor then closes the pipe itself.
        self._stopping = False

    @classmethod
    def connect(cls, reactor: Any, metrics: RelayMetrics) -> WorkerLink:
        link = cls(reactor, metrics)
        # POSIX's StandardIO (a descriptor each way); mypy reads Windows' signature.
        standard_io: Any = stdio.StandardIO
        standard_io(link, stdin=CONTROL_IN, stdout=CONTROL_OUT, reactor=reactor)
        reactor.addSystemEventTrigger("before", "shutdown", link.shutting_down)
        return link

    def shutting_down(self) -> None:
        self._stopping = True

    def notify(self, message: bytes) -> None:
        """What ``sd_notify`` would send, for the supervisor."""
        if self.transport is not None:
            self.transport.write(frame(b"notify " + message))

    def dataReceived(self, data: bytes) -> None:
        try:
            messages = self._frames.feed(data)
        except ValueError as e:
            log.error("control pipe: {error}", error=str(e))
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        for message in messages:
            if message == b"metrics":
                self._send(b"metrics " + self._metrics.render())
            elif message == b"readiness":
                report = self.readiness.report() if self.readiness else ReadinessReport(True, {})
                self._send(b"readiness " + report.to_json())

    def _send(self, message: bytes) -> None:
        self.transport.write(frame(message))  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._stopping:
            return
        log.warn("control pipe closed: the supervisor is gone; stopping")
        self._reactor.callWhenRunning(self._stop)

    def _stop(self) -> None:
        if self._reactor.running:
            try:
                self._reactor.stop()
            except Exception:  # already stopping (twisted.internet.error.ReactorNotRunning)
                pass
