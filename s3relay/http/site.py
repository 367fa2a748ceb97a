# -*- test-case-name: tests.unit.test_channel -*-
"""The relay's Site: channels that dispatch at the end of the headers, and
the connection count they are admitted against (this process's share of
``max_connections`` with ``[server] workers``: ``access.ratelimit.Share``)."""

from __future__ import annotations

from typing import Any, Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IAgent
from twisted.web.server import Site

from s3relay.access.ratelimit import Share
from s3relay.config import Config
from s3relay.credentials.service import CredentialProviders
from s3relay.http.channel import RelayChannel
from s3relay.http.connections import Connections
from s3relay.http.limits import DEFAULT_LIMITS, Limits
from s3relay.http.request import RelayRequest
from s3relay.ops.metrics import RelayMetrics
from s3relay.outcome import Monitor
from s3relay.resource import RelayResource


class RelaySite(Site):
    """A Site whose channels dispatch requests at the end of their headers.

    No HTTP/2 negotiation: the header-stage takeover is HTTP/1.1 only.
    """

    resource: RelayResource

    requestFactory = RelayRequest

    def __init__(
        self,
        resource: RelayResource,
        reactor: IReactorTime,
        metrics: RelayMetrics | None = None,
        limits: Limits = DEFAULT_LIMITS,
        idle_timeout: float | None = None,
        share: Share | None = None,
    ) -> None:
        super().__init__(resource, reactor=reactor)
        self.timeOut = idle_timeout
        self.displayTracebacks = False
        #: Counts connections (each channel reports to it).
        self.metrics = metrics
        #: Timeouts and limits for new connections (replaced on reload).
        self.limits = limits
        #: Open connections, for max_connections and graceful shutdown.
        self.connections = Connections()
        #: This process's share of max_connections (default: the supervisor's word).
        self.share = share if share is not None else Share.of_process()

    def log(self, request: Any) -> None:
        """No combined-format line: every request gets a structured access record."""

    def buildProtocol(self, addr: Any) -> Any:
        connections = self.connections
        max_connections = self.share.part(self.limits.max_connections)
        if not connections.may_accept(max_connections):
            return None  # shutting down, or flooded: close at once
        channel: Any = RelayChannel(
            self.limits, self.metrics, connections.over_limit(max_connections), connections.closed
        )
        # What Site.buildProtocol and HTTPFactory.buildProtocol set, in public names.
        channel.factory = self
        channel.site = self
        channel.requestFactory = self.requestFactory
        channel.callLater = self.reactor.callLater
        channel.timeOut = self.timeOut
        connections.add(channel)
        return channel


def make_site(
    config: Config,
    agent: IAgent | Mapping[str, IAgent],
    reactor: IReactorTime,
    monitor: Monitor,
    credentials: CredentialProviders,
) -> RelaySite:
    return RelaySite(
        RelayResource(config, agent, monitor, credentials),
        reactor,
        monitor.metrics,
        config.server.limits,
        config.server.idle_timeout,
    )
