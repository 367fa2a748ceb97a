"""Token buckets and concurrency limits with an injected clock (s3relay.access.ratelimit)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3relay.access.ratelimit import (
    UNLIMITED,
    WHOLE,
    WORKER_ENV,
    WORKERS_ENV,
    Admitted,
    RateLimiter,
    RateLimits,
    Refusal,
    Share,
    TokenBucket,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_burst_then_refill() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=clock)
    for _ in range(3):
        assert bucket.wait() == 0
        bucket.take()
    assert bucket.wait() == pytest.approx(0.5)
    clock.now += 0.25
    assert bucket.wait() == pytest.approx(0.25)
    clock.now += 0.25
    assert bucket.wait() == 0
    bucket.take()
    assert bucket.wait() > 0


def test_bucket_never_exceeds_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=2.0, clock=clock)
    clock.now += 3600
    for _ in range(2):
        assert bucket.wait() == 0
        bucket.take()
    assert bucket.wait() == pytest.approx(1.0)


def test_clock_stepping_back_takes_nothing_away() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=1.0, clock=clock)
    clock.now -= 100
    assert bucket.wait() == 0


def test_retry_after_is_whole_seconds_of_refill() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limits = RateLimits(rate=0.25, burst=1.0)
    assert isinstance(limiter.admit(limits, None, RateLimits()), Admitted)
    refusal = limiter.admit(limits, None, RateLimits())
    assert refusal == Refusal("relay", "rate", 4)
    error = refusal.error(None)
    assert (error.code, error.status, error.headers["Retry-After"]) == ("SlowDown", 503, "4")
    clock.now += 3.5
    refusal = limiter.admit(limits, None, RateLimits())
    assert isinstance(refusal, Refusal) and refusal.retry_after == 1
    clock.now += 0.5
    assert isinstance(limiter.admit(limits, None, RateLimits()), Admitted)


def test_client_limit_is_per_client() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    relay, own = RateLimits(), RateLimits(rate=1.0, burst=1.0)
    assert isinstance(limiter.admit(relay, "a", own), Admitted)
    refusal = limiter.admit(relay, "a", own)
    assert isinstance(refusal, Refusal) and refusal.scope == "client"
    assert "client a" in refusal.error("a").reason
    assert isinstance(limiter.admit(relay, "b", own), Admitted)


def test_refused_request_spends_no_token_elsewhere() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    relay = RateLimits(rate=1.0, burst=2.0)
    own = RateLimits(rate=1.0, burst=1.0)
    assert isinstance(limiter.admit(relay, "a", own), Admitted)  # relay 1 left, a 0 left
    assert isinstance(limiter.admit(relay, "a", own), Refusal)  # a refuses: relay keeps its token
    assert isinstance(limiter.admit(relay, "b", own), Admitted)
    assert isinstance(limiter.admit(relay, "c", own), Refusal)  # now the relay is empty
    refusal = limiter.admit(relay, "c", own)
    assert isinstance(refusal, Refusal) and refusal.scope == "relay"


def test_concurrency_slots_released_once() -> None:
    limiter = RateLimiter(FakeClock())
    relay, own = RateLimits(max_concurrent=3), RateLimits(max_concurrent=2)
    first = limiter.admit(relay, "a", own)
    second = limiter.admit(relay, "a", own)
    assert isinstance(first, Admitted) and isinstance(second, Admitted)
    refusal = limiter.admit(relay, "a", own)
    assert refusal == Refusal("client", "concurrency", 1)
    assert isinstance(limiter.admit(relay, "b", own), Admitted)
    assert isinstance(limiter.admit(relay, "c", own), Refusal)  # relay full
    assert limiter.in_flight("") == 3 and limiter.in_flight("client:a") == 2
    first.release()
    first.release()  # harmless
    assert limiter.in_flight("") == 2 and limiter.in_flight("client:a") == 1
    assert isinstance(limiter.admit(relay, "a", own), Admitted)


def test_concurrency_refusal_spends_no_token() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    own = RateLimits(rate=1.0, burst=1.0, max_concurrent=1)
    held = limiter.admit(RateLimits(), "a", RateLimits(max_concurrent=1))
    assert isinstance(held, Admitted)
    assert isinstance(limiter.admit(RateLimits(), "a", own), Refusal)
    held.release()
    assert isinstance(limiter.admit(RateLimits(), "a", own), Admitted)  # token still there


def test_new_limits_start_a_fresh_bucket_and_keep_in_flight() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    old = RateLimits(rate=1.0, burst=1.0, max_concurrent=1)
    held = limiter.admit(RateLimits(), "a", old)
    assert isinstance(held, Admitted)
    new = RateLimits(rate=5.0, burst=5.0, max_concurrent=1)
    refusal = limiter.admit(RateLimits(), "a", new)
    assert refusal == Refusal("client", "concurrency", 1)  # still one in flight
    held.release()
    for _ in range(5):
        admitted = limiter.admit(RateLimits(), "a", RateLimits(rate=5.0, burst=5.0))
        assert isinstance(admitted, Admitted)
    assert isinstance(limiter.admit(RateLimits(), "a", RateLimits(rate=5.0, burst=5.0)), Refusal)


def test_unlimited_admits_everything() -> None:
    limiter = RateLimiter(FakeClock())
    for _ in range(1000):
        admitted = limiter.admit(RateLimits(), "a", RateLimits())
        assert isinstance(admitted, Admitted)


# -- a worker's share of the limits ([server] workers) ---------------------------

COUNTS = st.integers(1, 64)


def shares(count: int) -> list[Share]:
    return [Share(index, count) for index in range(1, count + 1)]


@settings(max_examples=500)
@given(limit=st.integers(1, 10**6), count=COUNTS)
def test_count_shares_add_up_to_the_limit_and_each_is_usable(limit: int, count: int) -> None:
    parts = [share.part(limit) for share in shares(count)]
    assert min(parts) >= 1  # every worker can serve a request or a connection
    assert max(parts) - min(parts) <= 1  # as even as whole numbers get
    if limit >= count:
        assert sum(parts) == limit  # never more than the limit, relay-wide
    else:
        assert parts == [1] * count  # a limit below N acts as N (the stated bound)
    assert sum(parts) == max(limit, count)


@given(limit=st.integers(-3, 0), count=COUNTS)
def test_a_limit_that_refuses_everything_stays_so_in_every_worker(limit: int, count: int) -> None:
    assert [share.part(limit) for share in shares(count)] == [limit] * count


@settings(max_examples=500)
@given(rate=st.floats(0.001, 1e6), burst=st.floats(1.0, 1e6), count=COUNTS,
       concurrent=st.none() | st.integers(1, 10**6))
def test_rate_shares_add_up_and_each_bucket_holds_a_token(
    rate: float, burst: float, count: int, concurrent: int | None
) -> None:
    limits = RateLimits(rate=rate, burst=burst, max_concurrent=concurrent)
    parts = [share.limits(limits) for share in shares(count)]
    assert sum(p.rate or 0.0 for p in parts) == pytest.approx(rate)
    assert min(p.burst for p in parts) >= 1.0  # a bucket below 1 token never admits
    assert sum(p.burst for p in parts) == pytest.approx(max(burst, count))
    if concurrent is None:
        assert all(p.max_concurrent is None for p in parts)
    else:
        assert sum(p.max_concurrent or 0 for p in parts) == max(concurrent, count)


@given(limits=st.builds(RateLimits, st.none() | st.floats(0.001, 1e6), st.floats(1.0, 1e6),
                        st.none() | st.integers(-1, 10**6)),
       limit=st.integers(-1, 10**6))
def test_one_worker_keeps_every_limit_as_configured(limits: RateLimits, limit: int) -> None:
    assert WHOLE.limits(limits) is limits
    assert WHOLE.part(limit) == limit
    assert Share(3, 4).limits(UNLIMITED) is UNLIMITED


@settings(max_examples=300)
@given(count=st.integers(1, 6), rate=st.floats(0.1, 50.0), burst=st.floats(1.0, 50.0),
       arrivals=st.lists(st.tuples(st.floats(0.0, 0.5), st.integers(0, 5)), max_size=300))
def test_workers_together_admit_at_most_burst_plus_rate_times_t(
    count: int, rate: float, burst: float, arrivals: list[tuple[float, int]]
) -> None:
    """N workers, each with its share, requests arriving at any of them in any
    order: relay-wide at most max(burst, N) + rate * t in t seconds."""
    clock = FakeClock()
    start = clock.now
    workers = [(RateLimiter(clock), share) for share in shares(count)]
    admitted = 0
    limits = RateLimits(rate=rate, burst=burst)
    for wait, which in arrivals:
        clock.now += wait
        limiter, share = workers[which % count]
        if isinstance(limiter.admit(share.limits(limits), None, UNLIMITED), Admitted):
            admitted += 1
    assert admitted <= max(burst, count) + rate * (clock.now - start) + 1e-6


@settings(max_examples=300)
@given(count=st.integers(1, 6), limit=st.integers(1, 12),
       steps=st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=200))
def test_workers_together_hold_at_most_max_concurrent(
    count: int, limit: int, steps: list[tuple[int, bool]]
) -> None:
    """Requests start and end on any worker: never more than max(limit, N) in
    flight relay-wide, and a worker with nothing in flight always admits one."""
    workers = [(RateLimiter(FakeClock()), share) for share in shares(count)]
    held: list[list[Admitted]] = [[] for _ in workers]
    own = RateLimits(max_concurrent=limit)
    for which, start in steps:
        index = which % count
        limiter, share = workers[index]
        if start or not held[index]:
            outcome = limiter.admit(UNLIMITED, "a", share.limits(own))
            if not held[index]:
                assert isinstance(outcome, Admitted)
            if isinstance(outcome, Admitted):
                held[index].append(outcome)
        else:
            held[index].pop().release()
        assert sum(len(h) for h in held) <= max(limit, count)


def test_the_share_comes_from_the_supervisor() -> None:
    assert Share.of_process({}) is WHOLE
    assert Share.of_process({WORKER_ENV: "3"}) is WHOLE  # no count: not split
    assert Share.of_process({WORKER_ENV: "2", WORKERS_ENV: "3"}) == Share(2, 3)
    for index, count in (("4", "3"), ("0", "2"), ("x", "2"), ("1", "")):
        with pytest.raises(ValueError):
            Share.of_process({WORKER_ENV: index, WORKERS_ENV: count})


def test_a_worker_share_in_numbers() -> None:
    """Three workers: 10 connections are 4 + 3 + 3; rate 6/s burst 9 is 2/s and 3 each;
    burst 2 is 1 token each (3 relay-wide: the bound for a burst below N)."""
    assert [s.part(10) for s in shares(3)] == [4, 3, 3]
    assert [s.part(2) for s in shares(3)] == [1, 1, 1]
    assert Share(2, 3).limits(RateLimits(6.0, 9.0, 10)) == RateLimits(2.0, 3.0, 3)
    assert Share(1, 3).limits(RateLimits(6.0, 2.0)) == RateLimits(2.0, 1.0)
