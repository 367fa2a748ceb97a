# -*- test-case-name: tests.unit.test_channel -*-
"""The relay's Site: channels that dispatch at the end of the headers, and
the connection count they are admitted against."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IAgent
from twisted.web.server import Site

from s3relay.config import Config
from s3relay.credentials.provider import CredentialProviders
from s3relay.exchange import Monitor
from s3relay.http.channel import RelayChannel
from s3relay.http.connections import Connections
from s3relay.http.limits import DEFAULT_LIMITS, Limits
from s3relay.http.request import RelayRequest
from s3relay.ops.metrics import RelayMetrics
from s3relay.resource import RelayResource


class RelaySite(Site):
    """A Site whose channels dispatch requests at the end of their headers.

    No HTTP/2 negotiation: the header-stage takeover is HTTP/1.1 only.
    """

    resource: RelayResource

    protocol = RelayChannel  # type: ignore[assignment]
    requestFactory = RelayRequest
    #: Counts connections (RelayChannel reports to it).
    metrics: RelayMetrics | None = None
    #: Timeouts and limits for new connections (``limits``; replaced on reload).
    limits: Limits = DEFAULT_LIMITS
    #: Open connections, for max_connections and graceful shutdown (``connections``).
    connections: Connections | None = None

    def log(self, request: Any) -> None:
        """No combined-format line: every request gets a structured access record."""

    def buildProtocol(self, addr: Any) -> Any:
        connections = self.connections
        max_connections = self.limits.max_connections
        if connections is not None and not connections.may_accept(max_connections):
            return None  # shutting down, or flooded: close at once
        channel = super().buildProtocol(addr)
        channel.metrics = self.metrics
        channel.limits = self.limits
        if connections is not None:
            connections.add(channel, max_connections)
        return channel


def make_site(
    config: Config,
    agent: IAgent,
    reactor: IReactorTime,
    monitor: Monitor,
    credentials: CredentialProviders | None = None,
) -> RelaySite:
    site = RelaySite(RelayResource(config, agent, monitor, credentials), reactor=reactor)
    site.metrics = monitor.metrics
    site.timeOut = config.server.idle_timeout
    site.limits = config.server.limits
    site.connections = Connections()
    site.displayTracebacks = False
    return site
