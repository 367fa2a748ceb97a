# -*- test-case-name: tests.integration.test_reload -*-
"""SIGHUP: re-read the config and its secret files, swap them in for new requests.

A request reads the config once when its headers arrive, so requests in
flight finish under the config they started with.  A config that does not
load is refused with a log line and the running one stays.  Listener
changes (``listen``) take effect at the next restart; the listener's TLS
certificate, key, client CA and options are re-read (``ListenerTls``) and
swapped in with the config for new connections, open ones keep theirs.
systemd hears RELOADING=1 ... READY=1 around it.
"""

from __future__ import annotations

import signal
from typing import Any, Callable

from twisted.application.service import Service
from twisted.logger import Logger
from twisted.web.iweb import IAgent

from s3relay.config import Config, ConfigError, UpstreamConfig, load_config
from s3relay.credentials.service import CredentialProviders
from s3relay.http.site import RelaySite
from s3relay.listen.endpoints import ListenerTls
from s3relay.upstream.pools import UpstreamAgents

log = Logger(namespace="s3relay")


class Reloader(Service):
    def __init__(
        self,
        path: str,
        config: Config,
        site: RelaySite,
        agent: IAgent | UpstreamAgents,
        make_agent: Callable[[UpstreamConfig], IAgent],
        reactor: Any,
        notify: Callable[[bytes], object],
        credentials: CredentialProviders | None = None,
        tls: ListenerTls | None = None,
    ) -> None:
        self._path = path
        self._config = config
        self._site = site
        self._agent = agent
        self._make_agent = make_agent
        self._reactor = reactor
        self._notify = notify
        #: Rebuilt for the new config's credential sets (unchanged ones kept).
        self._credentials = credentials
        self._previous: Any = None
        #: The client listener's TLS context, rebuilt with each config.
        self._tls = tls

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._signalled)

    def stopService(self) -> None:
        signal.signal(signal.SIGHUP, self._previous or signal.SIG_DFL)
        super().stopService()

    def _signalled(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """Load the config file again; True if it replaced the running one."""
        self._notify(b"RELOADING=1")
        try:
            try:
                config = load_config(self._path)
                swap_tls = self._tls.prepare(config.server) if self._tls else None
            except ConfigError as e:
                log.error("reload refused, the running config stays: {error}", error=str(e))
                return False
            old = self._config
            if (config.server.listen, config.metrics_listen) != (
                old.server.listen,
                old.metrics_listen,
            ):
                log.warn("reload: listener changes take effect at the next restart")
            if isinstance(self._agent, UpstreamAgents):
                if config.routes is not None:  # new Agents for new or changed upstreams
                    self._agent.update(config.routes)
            elif config.upstream != old.upstream:
                self._agent = self._make_agent(config.upstream)
            if self._credentials is not None:
                self._credentials.reconfigure(config)
            self._site.resource.reconfigure(config, self._agent)
            self._site.timeOut = config.server.idle_timeout
            self._site.limits = config.server.limits
            self._config = config
            if swap_tls is not None:
                swap_tls()
            log.info(
                "reloaded {path}: {clients} client keys, upstream {url}{more}",
                path=self._path,
                clients=len(config.clients),
                url=config.upstream.url,
                more=_named(config),
            )
            return True
        finally:
            self._notify(b"READY=1")


def _named(config: Config) -> str:
    named = config.routes.named if config.routes is not None else {}
    return "".join(f", {name} {route.upstream.url}" for name, route in named.items())
