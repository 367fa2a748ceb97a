# -*- test-case-name: tests.unit.test_provider,tests.unit.test_static_credentials -*-
"""Every credential set's provider, and the one credential path requests take.

``CredentialProviders`` holds one provider per ``[credentials:NAME]`` set of
the running config: a ``StaticProvider`` for a static set, a refreshing
``Provider`` for a fetched one, both ``SetProvider``.  ``for_client``
answers every client (``credentials = self`` included) and ``check`` is the
readiness of every set a client uses, so a static and a fetched set are
asked the same way.

Static providers exist from construction on (they do no I/O); fetched ones
are built and started with the service, since fetching needs the reactor
running.  On reload (``reconfigure``, from ``s3relay.ops.reload``) a set
whose spec did not change keeps its provider and its current credentials
(a fetched one refreshes at once); a changed one gets a new provider, which
signs with the old one's last valid credentials until its own first fetch
ends (a static one is valid at once); the others are stopped.  A static
set's spec holds its keys, read again from its secret files at every load,
so a rotated secret file is a changed spec.

Here too: what fetches each remote source (``s3relay.credentials.sources``)
with what Agent and thread pool, injected as a ``SourceWorld``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgent

from s3relay.compat import HTTP11ClientFactory, use_client_factory
from s3relay.config import SELF, ClientKey, Config
from s3relay.upstream.routes import Route
from s3relay.credentials import sources as credsources
from s3relay.credentials.answers import Fetched, SourceError
from s3relay.credentials.base import SetProvider, unavailable
from s3relay.credentials.provider import Fetch, Provider
from s3relay.credentials.spec import (
    AssumeRoleSpec,
    ChainSpec,
    CredentialSet,
    CredentialSpec,
    OidcSpec,
    Refresh,
    StaticSpec,
    VaultSpec,
    WebIdentitySpec,
    sources_first,
)
from s3relay.credentials.static import StaticProvider, own_key
from s3relay.ops.metrics import RelayMetrics
from s3relay.upstream.tls import UpstreamTLS


class _QuietSourceFactory(HTTP11ClientFactory):
    """A refresh every few minutes is not worth two "Starting factory" log lines."""

    noisy = False


def make_source_agent(reactor: Any, ca_pem: bytes | None = None) -> IAgent:
    """An Agent for credential sources: no shared pool with the upstream, checked TLS."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    use_client_factory(pool, _QuietSourceFactory)
    return Agent(reactor, contextFactory=UpstreamTLS(ca_pem), pool=pool)


@dataclass
class SourceWorld:
    """What providers need from the outside, injected."""

    reactor: Any
    #: The pool botocore's blocking chain runs in (asked for at the first use:
    #: ``reactor.getThreadPool`` starts one).
    threadpool: Callable[[], ThreadPool]
    #: An Agent trusting ``ca_pem`` (None: the system's CAs).
    agent: Callable[[bytes | None], IAgent]
    metrics: RelayMetrics | None = None
    random: Callable[[], float] | None = None


class CredentialProviders(Service):
    """The providers of the running config's credential sets, static and fetched."""

    def __init__(self, config: Config, world: SourceWorld) -> None:
        self._config = config
        self._world = world
        self._providers: dict[str, SetProvider] = {}
        self._specs: dict[str, CredentialSpec] = {}
        self._install(config)  # the static sets; the fetched ones start with the service

    # -- service ------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._install(self._config)

    def stopService(self) -> None:
        for provider in self._providers.values():
            provider.stop()
        return super().stopService()

    def reconfigure(self, config: Config) -> None:
        """Use ``config``'s credential sets from now on (SIGHUP reload)."""
        self._config = config
        self._install(config)

    def _install(self, config: Config) -> None:
        old, self._providers = self._providers, {}
        old_specs, self._specs = self._specs, {}
        for name in sources_first(config.credential_specs):
            spec = config.credential_specs[name]
            if not self.running and not isinstance(spec, StaticSpec):
                continue
            kept = old.pop(name, None)
            if kept is not None and old_specs.get(name) == spec:
                self._providers[name] = kept
                kept.kick()
            else:
                provider = self._build(spec)
                if kept is not None:
                    kept.stop()
                    if isinstance(provider, Provider):
                        provider.predecessor = kept
                self._providers[name] = provider
                if self.running:
                    provider.start()
            self._specs[name] = spec
        for provider in old.values():
            provider.stop()

    # -- the request path ---------------------------------------------------------

    def current(self, name: str) -> CredentialSet | None:
        """Credential set ``name`` now (static or fetched), or None."""
        provider = self._providers.get(name)
        return provider.current() if provider is not None else None

    def for_client(
        self, config: Config, client: ClientKey, route: Route | None = None
    ) -> CredentialSet:
        """The credentials that re-sign ``client``'s request to ``route`` (the
        default upstream if None), or a 503 S3Error.

        ``config`` is the one the request runs under; the sets are this
        registry's, which a reload changes in the same reactor turn.
        """
        name = config.credential_set(client, route or config.route(None))
        if name == SELF:
            return own_key(client)
        provider = self._providers.get(name)
        if provider is None:
            raise unavailable(name)
        return provider.require()

    def check(self) -> tuple[bool, str]:
        """Readiness: every set a client uses has valid credentials."""
        config = self._config
        used = {c.credentials for c in config.clients.values()}
        used.update(n for c in config.clients.values() for n in c.upstream_credentials.values())
        if config.routes is not None:
            used.update(r.credentials for r in config.routes.named.values() if r.credentials)
        details, ok = [], True
        for name, provider in sorted(self._providers.items()):
            if name not in used:
                continue
            good, detail = provider.check()
            ok = ok and good
            details.append(f"{name}: {detail}")
        return ok, "; ".join(details) or "no credential set in use"

    def provider(self, name: str) -> SetProvider | None:
        return self._providers.get(name)

    # -- building -------------------------------------------------------------------

    def _build(self, spec: CredentialSpec) -> SetProvider:
        if isinstance(spec, StaticSpec):
            return StaticProvider(spec)
        world = self._world
        fetch = self._fetch_for(spec)
        refresh = getattr(spec, "refresh", Refresh())
        return Provider(spec.name, fetch, refresh, world.reactor, world.metrics, world.random)

    def _fetch_for(self, spec: CredentialSpec) -> Fetch:
        world = self._world
        if isinstance(spec, ChainSpec):
            return lambda: credsources.chain(world.reactor, world.threadpool(), spec)
        if isinstance(spec, VaultSpec):
            agent = world.agent(spec.ca_pem)
            return lambda: Deferred.fromCoroutine(
                credsources.vault(agent, spec, world.reactor.seconds)
            )
        agent = world.agent(None)
        if isinstance(spec, AssumeRoleSpec):
            return lambda: Deferred.fromCoroutine(self._assume_role(agent, spec))
        if isinstance(spec, WebIdentitySpec):
            return lambda: Deferred.fromCoroutine(
                credsources.assume_role_with_web_identity(
                    agent, spec.name, spec.sts, credsources.read_token_file(spec.token_file)
                )
            )
        assert isinstance(spec, OidcSpec)
        return lambda: Deferred.fromCoroutine(self._oidc(agent, spec))

    async def _assume_role(self, agent: IAgent, spec: AssumeRoleSpec) -> Fetched:
        source = self.current(spec.source)
        if source is None:
            raise SourceError(f"source credentials {spec.source} have no valid credentials")
        return await credsources.assume_role(
            agent, spec.name, spec.sts, spec.external_id, source
        )

    async def _oidc(self, agent: IAgent, spec: OidcSpec) -> Fetched:
        secret = credsources.read_secret(spec.client_secret.read)
        token = await credsources.oauth_token(
            agent, spec.token_url, spec.client_id, secret, spec.scope
        )
        return await credsources.assume_role_with_web_identity(agent, spec.name, spec.sts, token)


def _no_sources(*args: object) -> Any:
    raise RuntimeError("a static_only registry fetches nothing: it must not be started")


def static_only(config: Config) -> CredentialProviders:
    """A registry that is never started, for a resource made without one (tests, tools).

    Static sets and ``credentials = self`` answer; fetched sets fail closed
    with 503, as they do with no provider.  Whoever owns it reconfigures it
    on reload.
    """
    return CredentialProviders(config, SourceWorld(None, _no_sources, _no_sources))
