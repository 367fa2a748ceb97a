# -*- test-case-name: tests.unit.test_provider -*-
"""Upstream credentials fetched at run time, kept fresh in the background.

One ``Provider`` per remote credential set holds its current credentials and
refreshes them ``margin`` (+ random ``jitter``) seconds before they expire.
Requests only ever read ``current()``: they never wait for a refresh.  When
a set has no valid credentials at all (not fetched yet, expired, source
down) the request fails closed with 503 ServiceUnavailable, readiness says
not-ready, and a refresh is started; recovery needs nobody.

Failures are retried with a doubling delay, and a circuit breaker per source
stops calling a source that keeps failing until its open interval passed.

``CredentialProviders`` owns the providers of one config and rebuilds them
on reload: a set whose spec did not change keeps its provider and its
current credentials (and refreshes at once); a changed one gets a new
provider, which signs with the old one's last valid credentials until its
own first fetch ends; the others are stopped.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.iweb import IAgent

from s3relay.compat import HTTP11ClientFactory, use_client_factory
from s3relay.config import SELF, ClientKey, Config
from s3relay.credentials import sources as credsources
from s3relay.credentials.answers import Fetched, SourceError
from s3relay.credentials.breaker import Breaker, State
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
from s3relay.ops.metrics import RelayMetrics
from s3relay.s3.errors import S3Error
from s3relay.upstream.tls import UpstreamTLS

log = Logger(namespace="s3relay.credentials.provider")

#: Credentials this close to expiry are not used: a request signed now must
#: still be valid when it reaches S3.
VALIDITY_FLOOR = 10.0
#: Credentials without an expiry (the chain's static keys) are looked up
#: again this often, so that a rotated file or env is picked up.
RECHECK = 900.0

Fetch = Callable[[], "Deferred[Fetched]"]


def refresh_delay(now: float, expiry: float | None, refresh: Refresh, rand: float) -> float:
    """Seconds until the next refresh of credentials valid until ``expiry``.

    ``margin`` + ``rand`` × ``jitter`` before expiry; credentials that live
    shorter than that are refreshed at half their remaining life.
    """
    if expiry is None:
        return RECHECK
    left = expiry - now
    delay = left - refresh.margin - refresh.jitter * rand
    if delay < 1.0:
        delay = max(left / 2, 1.0)
    return delay


def describe(failure: Failure) -> str:
    """A log- and readiness-safe word on why a fetch failed."""
    if failure.check(SourceError):
        return str(failure.value)
    if failure.check(CancelledError, DeferredTimeout):
        return "timed out"
    if failure.check(ResponseNeverReceived, ResponseFailed):
        # The Agent wraps why: a timeout cancelled it, or the connection died.
        reasons = getattr(failure.value, "reasons", [])
        if any(reason.check(CancelledError) for reason in reasons):
            return "timed out"
        why = ", ".join(sorted({type(reason.value).__name__ for reason in reasons}))
        return f"no answer ({why or 'connection lost'})"
    # Connection errors and the like: the type says enough, the message may
    # hold a URL with a token in its query.
    return type(failure.value).__name__


class Provider:
    """The current credentials of one remote credential set."""

    def __init__(
        self,
        name: str,
        fetch: Fetch,
        refresh: Refresh,
        clock: IReactorTime,
        metrics: RelayMetrics | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self._fetch = fetch
        self._refresh = refresh
        self._clock = clock
        self._metrics = metrics
        #: [0, 1): spreads refreshes and retries of many relays.
        self._random = random or _random.Random().random
        self.breaker = Breaker(
            clock.seconds, refresh.failure_threshold, refresh.open_interval, self._breaker_changed
        )
        self._current: Fetched | None = None
        self._inflight: Deferred[Fetched] | None = None
        self._call: IDelayedCall | None = None
        #: The scheduled call is a retry after failure (``kick`` leaves it be).
        self._retrying = False
        self._failures = 0
        self.last_error = "not fetched yet"
        self._running = False
        #: The provider this one replaced at a reload (its spec changed): its
        #: last credentials, while valid, serve until this one's first fetch
        #: ends, so that a reload does not turn requests away meanwhile.  Only
        #: that long: a failed first fetch fails closed, as any outage does,
        #: rather than keep signing with what the operator replaced.
        self.predecessor: Provider | None = None

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._schedule(0.0, retrying=False)

    def stop(self) -> None:
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._inflight is not None:
            self._inflight.cancel()
        self.predecessor = None

    # -- the request path -----------------------------------------------------

    def current(self) -> CredentialSet | None:
        """Valid credentials now, or None (and a refresh is started)."""
        fetched = self.valid() if self._running else None
        if fetched is not None:
            return fetched.credentials
        self.kick()
        inherited = self.predecessor.valid() if self.predecessor is not None else None
        return inherited.credentials if inherited is not None else None

    def valid(self) -> Fetched | None:
        """The last fetched credentials, if they are still good to sign with."""
        fetched = self._current
        if fetched is None or fetched.expiry is None:
            return fetched
        return fetched if self._clock.seconds() < fetched.expiry - VALIDITY_FLOOR else None

    def kick(self) -> None:
        """Refresh now, unless a fetch is running or a retry is already due."""
        if self._running and self._inflight is None and not self._retrying:
            self._schedule(0.0, retrying=False)

    def check(self) -> tuple[bool, str]:
        """Readiness: are there valid credentials?  Never I/O."""
        fetched = self.valid()
        if fetched is not None:
            if fetched.expiry is None:
                return True, "valid"
            return True, f"valid for {fetched.expiry - self._clock.seconds():.0f} s"
        state = self.breaker.state
        breaker = "" if state is State.CLOSED else f"; source circuit {state.name.lower()}"
        if self.predecessor is not None and self.predecessor.valid() is not None:
            return True, (f"the previous config's credentials until new ones are fetched "
                          f"({self.last_error}{breaker})")
        return False, f"no valid credentials: {self.last_error}{breaker}"

    # -- refreshing -------------------------------------------------------------

    def _schedule(self, delay: float, retrying: bool) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._retrying = retrying
        self._call = self._clock.callLater(max(delay, 0.0), self._run)

    def _run(self) -> None:
        self._call = None
        self._retrying = False
        if not self._running or self._inflight is not None:
            return
        if not self.breaker.allow():
            self._schedule(self.breaker.retry_at() - self._clock.seconds(), retrying=True)
            return
        d = maybeDeferred(self._fetch)
        self._inflight = d
        d.addTimeout(self._refresh.timeout, self._clock)
        d.addCallbacks(self._succeeded, self._failed)
        d.addErrback(lambda f: log.failure("credential refresh of {name}", f, name=self.name))

    def _succeeded(self, fetched: Fetched) -> None:
        self._inflight = None
        if not self._running:
            return
        recovered = self._current is None or self._failures > 0
        self._current = fetched
        self.predecessor = None
        self._failures = 0
        self.last_error = ""
        self.breaker.success()
        now = self._clock.seconds()
        if self._metrics is not None and fetched.expiry is not None:
            self._metrics.credentials_expiry(self.name, fetched.expiry)
        delay = refresh_delay(now, fetched.expiry, self._refresh, self._random())
        if recovered:
            log.info(
                "credentials {name}: fetched {key}, next refresh in {delay:.0f} s",
                name=self.name,
                key=fetched.credentials.access_key_id,
                delay=delay,
            )
        self._schedule(delay, retrying=False)

    def _failed(self, failure: Failure) -> None:
        self._inflight = None
        self.predecessor = None
        if not self._running:
            return
        self._failures += 1
        self.last_error = describe(failure)
        if self._metrics is not None:
            self._metrics.credential_refresh_failed(self.name)
        self.breaker.failure()
        now = self._clock.seconds()
        backoff = min(
            self._refresh.retry * 2 ** min(self._failures - 1, 20), self._refresh.open_interval
        )
        delay = max(backoff * (0.5 + self._random() / 2), self.breaker.retry_at() - now)
        valid = self.check()[0]
        log.warn(
            "credentials {name}: refresh failed ({error}); {state}, retry in {delay:.1f} s",
            name=self.name,
            error=self.last_error,
            state="current ones still valid" if valid else "NO VALID CREDENTIALS",
            delay=delay,
        )
        self._schedule(delay, retrying=True)

    def _breaker_changed(self, old: State, new: State) -> None:
        log.warn(
            "credentials {name}: source circuit {old} -> {new}",
            name=self.name,
            old=old.name.lower(),
            new=new.name.lower(),
        )
        if self._metrics is not None:
            self._metrics.credential_source_state(self.name, new.value)


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
    """The providers of the running config's remote credential sets."""

    def __init__(self, config: Config, world: SourceWorld) -> None:
        self._config = config
        self._world = world
        self._providers: dict[str, Provider] = {}
        self._specs: dict[str, CredentialSpec] = {}

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
        if self.running:
            self._install(config)

    def _install(self, config: Config) -> None:
        old, self._providers = self._providers, {}
        old_specs, self._specs = self._specs, {}
        for name in sources_first(config.credential_specs):
            spec = config.credential_specs[name]
            if isinstance(spec, StaticSpec):
                continue
            kept = old.pop(name, None)
            if kept is not None and old_specs.get(name) == spec:
                self._providers[name] = kept
                kept.kick()
            else:
                provider = self._build(spec)
                if kept is not None:
                    kept.stop()
                    provider.predecessor = kept
                self._providers[name] = provider
                provider.start()
            self._specs[name] = spec
        for provider in old.values():
            provider.stop()

    # -- the request path ---------------------------------------------------------

    def current(self, name: str) -> CredentialSet | None:
        """Credential set ``name`` now: static from the config, fetched, or None."""
        if name in self._config.credentials:
            return self._config.credentials[name]
        provider = self._providers.get(name)
        return provider.current() if provider is not None else None

    def for_client(self, config: Config, client: ClientKey) -> CredentialSet:
        """The credentials that re-sign ``client``'s request, or a 503 S3Error."""
        if client.credentials == SELF or client.credentials in config.credentials:
            return config.upstream_credentials(client)
        provider = self._providers.get(client.credentials)
        credentials = provider.current() if provider is not None else None
        if credentials is None:
            raise S3Error(
                "ServiceUnavailable",
                "The relay has no valid upstream credentials right now; please retry.",
                503,
                f"credential set {client.credentials} has no valid credentials",
            )
        return credentials

    def check(self) -> tuple[bool, str]:
        """Readiness: every set a client uses has valid credentials."""
        used = {c.credentials for c in self._config.clients.values()}
        details, ok = [], True
        for name, provider in sorted(self._providers.items()):
            if name not in used:
                continue
            good, detail = provider.check()
            ok = ok and good
            details.append(f"{name}: {detail}")
        return ok, "; ".join(details) or "static credentials only"

    def provider(self, name: str) -> Provider | None:
        return self._providers.get(name)

    # -- building -------------------------------------------------------------------

    def _build(self, spec: CredentialSpec) -> Provider:
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
