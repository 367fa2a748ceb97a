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

With ``[server] workers = N`` every worker process enforces its ``Share``
of each limit, so that the limits hold for the relay as a whole (below).

Pure: time comes from an injected ``clock`` (seconds, monotonic enough);
nothing here imports Twisted.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

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

#: Set by the supervisor in each worker's environment (``workers.pool``):
#: the worker's index (1..N), also the ``worker`` field of its log lines.
WORKER_ENV = "S3RELAY_WORKER"
#: Set with it: N, how many workers share the relay's limits.
WORKERS_ENV = "S3RELAY_WORKERS"


@dataclass(frozen=True)
class Share:
    """Worker ``index`` of ``count``'s share of the relay-wide limits.

    With ``[server] workers = N`` the kernel hands each connection to one of
    N processes that share nothing, so each enforces a share of every limit
    (``rate``, ``burst``, ``max_concurrent_requests``, ``max_connections``),
    and the shares add up to the configured limit:

    * ``rate`` and ``burst``: ``rate / N`` and ``burst / N`` each, but a
      bucket of at least 1 token (a smaller one could never admit anything);
    * counts (``max_concurrent_requests``, ``max_connections``): ``L // N``
      each, and one more for the first ``L % N`` workers, so that they sum to
      exactly ``L``; but at least 1 each.

    So relay-wide at most ``max(burst, N) + rate * t`` requests in any ``t``
    seconds, and ``max(L, N)`` requests or connections at once: a limit below
    N acts as N (the supervisor logs a warning).  The error goes the other
    way only: a client whose requests all reach one worker (one keep-alive
    connection) gets that worker's share, down to ``1/N`` of its limit.
    Limits below 1 (refuse everything) are left as they are, and with one
    worker (``WHOLE``) every limit is the configured one.
    """

    #: This process's number, 1..count.
    index: int = 1
    #: How many processes share the limits.
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"worker {self.index} of {self.count}")

    @classmethod
    def of_process(cls, environ: Mapping[str, str] = os.environ) -> Share:
        """This process's share: ``WHOLE`` unless the supervisor started it as a worker."""
        index, count = environ.get(WORKER_ENV), environ.get(WORKERS_ENV)
        if index is None or count is None:
            return WHOLE
        return cls(int(index), int(count))

    def part(self, limit: int) -> int:
        """This worker's part of a count limit (see the class docstring)."""
        if self.count == 1 or limit < 1:
            return limit
        base, extra = divmod(limit, self.count)
        return max(1, base + (1 if self.index <= extra else 0))

    def limits(self, limits: RateLimits) -> RateLimits:
        """This worker's part of one scope's limits."""
        if self.count == 1 or limits == UNLIMITED:
            return limits
        rate, burst, concurrent = limits.rate, limits.burst, limits.max_concurrent
        if rate is not None:
            rate, burst = rate / self.count, max(1.0, burst / self.count)
        if concurrent is not None:
            concurrent = self.part(concurrent)
        return RateLimits(rate, burst, concurrent)


WHOLE = Share()


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
