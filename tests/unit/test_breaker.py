"""The circuit breaker: opens after N failures, lets one probe through, recovers."""

from __future__ import annotations

from twisted.internet.testing import Clock

from s3relay.credentials.breaker import Breaker, State


def make(threshold: int = 3, interval: float = 60.0) -> tuple[Breaker, Clock, list[tuple[State, State]]]:
    clock = Clock()
    changes: list[tuple[State, State]] = []
    breaker = Breaker(clock.seconds, threshold, interval, lambda a, b: changes.append((a, b)))
    return breaker, clock, changes


def test_closed_allows_and_counts_consecutive_failures() -> None:
    breaker, clock, changes = make()
    assert breaker.allow() and breaker.state is State.CLOSED
    breaker.failure()
    breaker.failure()
    breaker.success()  # resets the count
    breaker.failure()
    breaker.failure()
    assert breaker.state is State.CLOSED and breaker.allow()
    assert changes == []


def test_opens_at_threshold_and_refuses_until_interval() -> None:
    breaker, clock, changes = make(threshold=3, interval=60)
    clock.advance(1000)
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state is State.OPEN
    assert changes == [(State.CLOSED, State.OPEN)]
    assert not breaker.allow()
    assert breaker.retry_at() == 1060
    clock.advance(59.9)
    assert not breaker.allow()


def test_half_open_lets_one_probe_and_success_closes() -> None:
    breaker, clock, changes = make(threshold=1, interval=10)
    breaker.failure()
    clock.advance(10)
    assert breaker.state is State.HALF_OPEN
    assert breaker.retry_at() == clock.seconds()
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one
    breaker.success()
    assert breaker.state is State.CLOSED and breaker.allow()
    assert changes == [(State.CLOSED, State.OPEN), (State.OPEN, State.HALF_OPEN),
                       (State.HALF_OPEN, State.CLOSED)]


def test_failed_probe_opens_again_for_a_full_interval() -> None:
    breaker, clock, changes = make(threshold=2, interval=30)
    breaker.failure()
    breaker.failure()
    clock.advance(30)
    assert breaker.allow()
    breaker.failure()  # one failure in half-open is enough
    assert breaker.state is State.OPEN
    assert breaker.retry_at() == 60
    clock.advance(29)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()
    breaker.success()
    assert breaker.state is State.CLOSED
    # Closed again: the threshold counts from zero.
    breaker.failure()
    assert breaker.state is State.CLOSED
    assert [new for _, new in changes] == [State.OPEN, State.HALF_OPEN, State.OPEN,
                                           State.HALF_OPEN, State.CLOSED]
