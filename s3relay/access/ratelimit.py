# -*- test-case-name: tests.unit.test_ratelimit -*-
"""Request rate and concurrency limits, per client and for the whole relay.

A token bucket per limited scope (the relay, each client) admits ``rate``
requests per second on average and up to ``burst`` at once; a counter per
scope bounds the requests in flight.  A request over any limit gets 503
SlowDown with ``Retry-After``, the way S3 itself throttles, so SDKs back off
and retry by themselves.

A request is checked against every applicable limit before anything is
taken, so a request refused by one limit costs no token or slot in another.
The slots a request holds are released by ``Admitted.release``, which the
caller must run however the request ends; releasing twice is harmless.

Pure: time comes from an injected ``clock`` (seconds, monotonic enough);
nothing here imports Twisted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from s3relay.s3.errors import S3Error

Clock = Callable[[], float]


@dataclass(frozen=True)
class RateLimits:
    """One scope's limits; None = unlimited."""

    #: Requests per second, on average.
    rate: float | None = None
    #: Requests admitted at once after a quiet period (bucket size).
    burst: float = 1.0
    #: Requests in flight at the same time.
    max_concurrent: int | None = None


UNLIMITED = RateLimits()


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        # A clock that steps backwards adds nothing rather than removing tokens.
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = now

    def wait(self) -> float:
        """Seconds until a token is available (0: one is available now)."""
        self._refill()
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def take(self) -> None:
        """Spend one token (call only after ``wait()`` returned 0)."""
        self._tokens -= 1.0


class Admitted:
    """The concurrency slots one admitted request holds."""

    def __init__(self, counters: Sequence[_Counter]) -> None:
        self._counters: Sequence[_Counter] | None = counters

    def release(self) -> None:
        counters, self._counters = self._counters, None
        for counter in counters or ():
            counter.count -= 1


class _Counter:
    def __init__(self) -> None:
        self.count = 0


@dataclass(frozen=True)
class Refusal:
    """Why a request was throttled: which scope and limit, and when to retry."""

    #: ``relay`` or ``client``.
    scope: str
    #: ``rate`` or ``concurrency``.
    limit: str
    #: Whole seconds for ``Retry-After`` (at least 1).
    retry_after: int

    def error(self, client: str | None) -> S3Error:
        who = "the relay" if self.scope == "relay" else f"client {client}"
        what = "request rate" if self.limit == "rate" else "concurrent requests"
        return S3Error(
            "SlowDown",
            "Please reduce your request rate.",
            503,
            f"{what} limit of {who} reached; retry after {self.retry_after}s",
            headers={"Retry-After": str(self.retry_after)},
        )


class RateLimiter:
    """Token buckets and in-flight counters of the relay and of each client.

    State is kept by scope name across reconfiguration: a bucket whose limits
    changed starts afresh (full), in-flight counts carry over so that requests
    admitted under the old configuration still count.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._counters: dict[str, _Counter] = {}

    def _bucket(self, scope: str, limits: RateLimits) -> TokenBucket | None:
        if limits.rate is None:
            self._buckets.pop(scope, None)
            return None
        bucket = self._buckets.get(scope)
        if bucket is None or (bucket.rate, bucket.burst) != (limits.rate, limits.burst):
            bucket = self._buckets[scope] = TokenBucket(limits.rate, limits.burst, self._clock)
        return bucket

    def in_flight(self, scope: str) -> int:
        counter = self._counters.get(scope)
        return counter.count if counter is not None else 0

    def admit(self, relay: RateLimits, client: str | None, limits: RateLimits) -> Admitted | Refusal:
        """Admit one request of ``client`` (None: anonymous, relay limits only)."""
        scopes = [("relay", "", relay)]
        if client is not None:
            scopes.append(("client", f"client:{client}", limits))
        buckets = []
        for kind, name, scope_limits in scopes:
            bucket = self._bucket(name, scope_limits)
            if bucket is None:
                continue
            wait = bucket.wait()
            if wait > 0:
                return Refusal(kind, "rate", max(1, math.ceil(wait)))
            buckets.append(bucket)
        counters = []
        for kind, name, scope_limits in scopes:
            if scope_limits.max_concurrent is None:
                continue
            counter = self._counters.setdefault(name, _Counter())
            if counter.count >= scope_limits.max_concurrent:
                return Refusal(kind, "concurrency", 1)
            counters.append(counter)
        for bucket in buckets:
            bucket.take()
        for counter in counters:
            counter.count += 1
        return Admitted(counters)
