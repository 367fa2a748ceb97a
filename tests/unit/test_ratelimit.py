"""Token buckets and concurrency limits with an injected clock (s3relay.access.ratelimit)."""

from __future__ import annotations

import pytest

from s3relay.access.ratelimit import (
    Admitted,
    RateLimiter,
    RateLimits,
    Refusal,
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
