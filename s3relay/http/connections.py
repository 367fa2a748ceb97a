# -*- test-case-name: tests.unit.test_limits -*-
"""The relay's open client connections: counted, capped, and drained on shutdown.

``max_connections`` caps the connections the relay serves.  One past it is
accepted, its request head read (under ``header_timeout``), and answered with
503 SlowDown before closing: a client library sees an S3 error it retries with
backoff, where a refused or reset TCP connection reads as the relay being down.
Those refused connections are themselves capped (at the same number): beyond
that, new connections are closed at once.  With ``[server] workers`` the
number here is this worker's share of ``max_connections`` (``RelaySite``).

On SIGTERM (``GracefulShutdown.stopService``, alongside the listeners that stop
accepting) idle keep-alive connections close at once, requests under way run to
their end for up to ``shutdown_grace`` seconds, and whatever is left then is
aborted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

if TYPE_CHECKING:
    from s3relay.http.channel import RelayChannel

log = Logger(namespace="s3relay")


class Connections:
    """The open client connections of one site."""

    def __init__(self) -> None:
        #: Connections being served.
        self.served: set[RelayChannel] = set()
        #: Connections past max_connections, waiting to hear 503 SlowDown.
        self.refused: set[RelayChannel] = set()
        #: Once set, no new connection is taken (shutdown).
        self.draining = False
        self._idle: list[Deferred[None]] = []

    def may_accept(self, max_connections: int) -> bool:
        """Whether to take a new connection at all (even just to refuse it politely)."""
        return not self.draining and len(self.refused) < max_connections

    def over_limit(self, max_connections: int) -> bool:
        """Whether a new connection would be one past ``max_connections``
        (served only to hear 503 SlowDown)."""
        return len(self.served) >= max_connections

    def add(self, channel: RelayChannel) -> None:
        """Count ``channel`` (built with ``over_limit``'s answer and ``closed``)."""
        (self.refused if channel.overloaded else self.served).add(channel)

    def closed(self, channel: RelayChannel) -> None:
        """``channel`` is gone."""
        self.served.discard(channel)
        self.refused.discard(channel)
        if not self.served and not self.refused:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def drain(self, grace: float, clock: IReactorTime) -> Deferred[None]:
        """Stop taking connections, let requests under way finish for ``grace``
        seconds, then abort the rest.  Fires once every connection is gone."""
        self.draining = True
        every = self.served | self.refused
        if not every:
            return succeed(None)
        log.info(
            "shutting down: {count} client connections, {grace}s grace",
            count=len(every),
            grace=grace,
        )
        done: Deferred[None] = Deferred()
        self._idle.append(done)
        for channel in every:
            channel.drain()
        timer: IDelayedCall = clock.callLater(grace, self._abort_all)

        def stop_timer(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        done.addBoth(stop_timer)
        return done

    def _abort_all(self) -> None:
        left = self.served | self.refused
        if left:
            log.warn(
                "shutdown grace over: aborting {count} client connections", count=len(left)
            )
        for channel in left:
            channel.abort()


class GracefulShutdown(Service):
    """Drains ``connections`` when the application stops (SIGTERM)."""

    def __init__(
        self, connections: Connections, grace: Callable[[], float], clock: IReactorTime
    ) -> None:
        self._connections = connections
        #: Read at stop time, so that a reloaded shutdown_grace counts.
        self._grace = grace
        self._clock = clock

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self._connections.drain(self._grace(), self._clock)
