# -*- test-case-name: tests.unit.test_tap -*-
"""One relay process as a Twisted service: its listeners and what they share.

``RelayService`` is what ``twistd s3relay`` runs (``tap.makeService``): the
S3 listener and its Site, the management site, the credential providers,
graceful shutdown, SIGHUP reload and the systemd notifications.  A
``Listening`` says where the process listens and whom it tells it is ready:
systemd for a relay of its own, the supervisor for one of ``[server]
workers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger

from s3relay.config import Config
from s3relay.credentials.service import CredentialProviders, SourceWorld, make_source_agent
from s3relay.http.connections import GracefulShutdown
from s3relay.http.site import make_site
from s3relay.listen.endpoints import ListenerTls, listen_endpoint
from s3relay.ops.management import Readiness, UpstreamHealth, make_management_site
from s3relay.ops.metrics import RelayMetrics
from s3relay.ops.reload import Reloader
from s3relay.ops.systemd import Listeners, StoppingNotifier, sd_notify
from s3relay.outcome import Monitor
from s3relay.upstream.agent import BufferBudget, libc_malloc_trim, make_agent
from s3relay.upstream.pools import UpstreamAgents
from s3relay.upstream.routes import DEFAULT
from s3relay.workers.link import WorkerLink, worker_endpoint

log = Logger(namespace="s3relay")


@dataclass(frozen=True)
class Listening:
    """Where one relay process listens, and whom it tells how it is doing."""

    #: The S3 listener.
    endpoint: IStreamServerEndpoint
    #: The management site (``[metrics] listen``); None: not served here.
    management: IStreamServerEndpoint | None
    #: Sends systemd-style notifications (READY=1, RELOADING=1, STOPPING=1).
    notify: Callable[[bytes], object]
    #: A worker's control pipe to its supervisor; None for a relay of its own.
    link: WorkerLink | None = None

    @classmethod
    def own(cls, reactor: Any, config: Config, metrics: RelayMetrics) -> Listening:
        """A relay of its own: its listeners from the config; it tells systemd."""
        endpoint = listen_endpoint(
            reactor, config.server.listen, tls=config.server.tls,
            handshake_failed=metrics.tls_handshake_failed,
        )
        management = (
            listen_endpoint(reactor, config.metrics_listen, "metrics")
            if config.metrics_listen else None
        )
        return cls(endpoint, management, sd_notify)

    @classmethod
    def worker(cls, reactor: Any, config: Config, metrics: RelayMetrics) -> Listening:
        """One of ``[server] workers``: the supervisor's socket; the supervisor
        serves ``[metrics]`` and talks to systemd."""
        link = WorkerLink.connect(reactor, metrics)
        endpoint = worker_endpoint(reactor, config.server, metrics.tls_handshake_failed)
        return cls(endpoint, None, link.notify, link)


class RelayService(MultiService):
    """One relay process: listeners, credentials, shutdown, reload, readiness."""

    def __init__(
        self,
        config_path: str,
        config: Config,
        reactor: Any,
        metrics: RelayMetrics,
        listening: Listening,
    ) -> None:
        super().__init__()
        assert config.routes is not None
        insecure = [route for route in config.routes.all() if route.upstream.insecure]
        for route in insecure:
            log.warn(
                "INSECURE: [{section}] insecure = yes: the certificate of {url} is not checked",
                section="upstream" if route.name == DEFAULT else f"upstream:{route.name}",
                url=route.upstream.url,
            )
        notify = listening.notify
        monitor = Monitor(metrics, UpstreamHealth(reactor.seconds), reactor,
                          BufferBudget(trim=libc_malloc_trim()))
        # Ready only once the reactor runs: before that, twistd has not installed
        # its SIGTERM handler yet, and a stop request would kill it outright.
        listeners = Listeners(
            lambda: reactor.callWhenRunning(notify, b"READY=1\nSTATUS=listening")
        )
        connect_timeout = config.server.limits.connect_timeout
        agent = UpstreamAgents(
            lambda upstream: make_agent(reactor, upstream, connect_timeout, monitor.buffers),
            config.routes,
        )
        credentials = CredentialProviders(
            config,
            SourceWorld(
                reactor,
                lambda: reactor.getThreadPool(),
                lambda ca_pem: make_source_agent(reactor, ca_pem),
                metrics,
            ),
        )
        credentials.setServiceParent(self)
        site = make_site(config, agent, reactor, monitor, credentials)
        StreamServerEndpointService(listeners.watch(listening.endpoint), site).setServiceParent(
            self
        )
        listener_tls = ListenerTls(
            config.server.listen, listening.endpoint, reactor.seconds, metrics.certificate_expiry
        )
        listener_tls.log_served()
        readiness = Readiness()
        readiness.add("listening", lambda: (listeners.ready, "all listeners bound"))
        readiness.add("upstream", lambda: monitor.upstreams_check(lambda: list(agent)))
        readiness.add("credentials", credentials.check)
        if insecure:
            readiness.add("upstream-tls", lambda: (True, "INSECURE: certificate not checked"))
        if listening.link is not None:  # the supervisor's /readyz asks for these
            listening.link.readiness = readiness
        if listening.management is not None:
            management = make_management_site(monitor.metrics, readiness, reactor)
            StreamServerEndpointService(
                listeners.watch(listening.management), management
            ).setServiceParent(self)
        StoppingNotifier(notify).setServiceParent(self)
        # On SIGTERM, alongside the listeners closing: drain client connections.
        GracefulShutdown(
            site.connections, lambda: site.limits.shutdown_grace, reactor
        ).setServiceParent(self)
        Reloader(
            config_path,
            config,
            site,
            agent,
            lambda upstream: make_agent(reactor, upstream, connect_timeout, monitor.buffers),
            reactor,
            notify,
            credentials,
            listener_tls,
        ).setServiceParent(self)
