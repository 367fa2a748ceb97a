# -*- test-case-name: tests.unit.test_provider -*-
"""One fetched credential set's credentials, kept fresh in the background.

A ``Provider`` per remote credential set holds its current credentials and
refreshes them ``margin`` (+ random ``jitter``) seconds before they expire.
Requests only ever read ``current()``: they never wait for a refresh.  When
a set has no valid credentials at all (not fetched yet, expired, source
down) the request fails closed with 503 ServiceUnavailable, readiness says
not-ready, and a refresh is started; recovery needs nobody.

Failures are retried with a doubling delay, and a circuit breaker per source
stops calling a source that keeps failing until its open interval passed.

This module is the refresh loop of one set, given a ``fetch`` function;
which function, and the registry of every set's provider that a reload
rebuilds, are ``s3relay.credentials.service``.
"""

from __future__ import annotations

import random as _random
from typing import Callable

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from s3relay.credentials.answers import Fetched, SourceError
from s3relay.credentials.base import SetProvider
from s3relay.credentials.breaker import Breaker, State
from s3relay.credentials.spec import CredentialSet, Refresh
from s3relay.ops.metrics import RelayMetrics

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


class Provider(SetProvider):
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
        self.predecessor: SetProvider | None = None

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
