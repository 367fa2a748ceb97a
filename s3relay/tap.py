# -*- test-case-name: tests.unit.test_tap -*-
"""``twistd s3relay``: command-line options and the service they make."""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.logger import Logger
from twisted.python import usage

from s3relay.config import ConfigError, load_config
from s3relay.credentials.service import (
    CredentialProviders,
    SourceWorld,
    make_source_agent,
)
from s3relay.outcome import Monitor
from s3relay.http.connections import GracefulShutdown
from s3relay.http.site import make_site
from s3relay.listen.endpoints import ListenerTls, listen_endpoint
from s3relay.ops.management import Readiness, UpstreamHealth, make_management_site
from s3relay.ops.metrics import RelayMetrics
from s3relay.ops.reload import Reloader
from s3relay.ops.systemd import Listeners, StoppingNotifier, sd_notify
from s3relay.upstream.agent import BufferBudget, libc_malloc_trim, make_agent
from s3relay.workers.link import WorkerLink, worker_endpoint
from s3relay.workers.supervisor import make_supervisor

DEFAULT_CONFIG = "/etc/s3relay/s3relay.ini"

log = Logger(namespace="s3relay")


class Options(usage.Options):
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "Path of the s3relay ini file."],
        ["worker", None, None, "Internal: run as worker N of a [server] workers supervisor."],
    ]


def makeService(options: Options, reactor: Any = None) -> IService:
    """The relay service: one listener in front of the configured upstream.

    With ``[server] workers`` above 1, the supervisor of that many relay
    processes instead (``workers``); ``--worker`` makes one of those."""
    if reactor is None:
        from twisted.internet import reactor
    metrics = RelayMetrics()
    notify: Callable[[bytes], object] = sd_notify
    link: WorkerLink | None = None
    try:
        config = load_config(options["config"])
        if options["worker"] is not None:
            # One of [server] workers: the supervisor's socket; it talks to systemd.
            link = WorkerLink.connect(reactor, metrics)
            notify = link.notify
            endpoint = worker_endpoint(reactor, config.server, metrics.tls_handshake_failed)
        elif config.server.workers > 1:
            return make_supervisor(options["config"], config, reactor, sd_notify)
        else:
            endpoint = listen_endpoint(
                reactor, config.server.listen, tls=config.server.tls,
                handshake_failed=metrics.tls_handshake_failed,
            )
        metrics_endpoint = options["worker"] is None and config.metrics_listen and listen_endpoint(
            reactor, config.metrics_listen, "metrics"
        )
    except ConfigError as e:
        raise SystemExit(f"s3relay: {options['config']}: {e}") from None
    if config.upstream.insecure:
        log.warn(
            "INSECURE: [upstream] insecure = yes: the certificate of {url} is not checked",
            url=config.upstream.url,
        )
    monitor = Monitor(metrics, UpstreamHealth(reactor.seconds), reactor,
                      BufferBudget(trim=libc_malloc_trim()))
    # Ready only once the reactor runs: before that, twistd has not installed
    # its SIGTERM handler yet, and a stop request would kill it outright.
    listeners = Listeners(
        lambda: reactor.callWhenRunning(notify, b"READY=1\nSTATUS=listening")
    )
    service = MultiService()
    connect_timeout = config.server.limits.connect_timeout
    agent = make_agent(reactor, config.upstream, connect_timeout, monitor.buffers)
    credentials = CredentialProviders(
        config,
        SourceWorld(
            reactor,
            lambda: reactor.getThreadPool(),
            lambda ca_pem: make_source_agent(reactor, ca_pem),
            metrics,
        ),
    )
    credentials.setServiceParent(service)
    site = make_site(config, agent, reactor, monitor, credentials)
    StreamServerEndpointService(listeners.watch(endpoint), site).setServiceParent(service)
    listener_tls = ListenerTls(
        config.server.listen, endpoint, reactor.seconds, metrics.certificate_expiry
    )
    listener_tls.log_served()
    if metrics_endpoint or link is not None:
        readiness = Readiness()
        readiness.add("listening", lambda: (listeners.ready, "all listeners bound"))
        readiness.add("upstream", monitor.health.check)
        readiness.add("credentials", credentials.check)
        if config.upstream.insecure:
            readiness.add("upstream-tls", lambda: (True, "INSECURE: certificate not checked"))
        if link is not None:  # the supervisor's /readyz asks for these
            link.readiness = readiness
    if metrics_endpoint:
        management = make_management_site(monitor.metrics, readiness, reactor)
        StreamServerEndpointService(
            listeners.watch(metrics_endpoint), management
        ).setServiceParent(service)
    StoppingNotifier(notify).setServiceParent(service)
    if site.connections is not None:
        # On SIGTERM, alongside the listeners closing: drain client connections.
        GracefulShutdown(
            site.connections, lambda: site.limits.shutdown_grace, reactor
        ).setServiceParent(service)
    Reloader(
        options["config"],
        config,
        site,
        agent,
        lambda upstream: make_agent(reactor, upstream, connect_timeout, monitor.buffers),
        reactor,
        notify,
        credentials,
        listener_tls,
    ).setServiceParent(service)
    return service
