# -*- test-case-name: tests.unit.test_breaker -*-
"""A circuit breaker around one remote credential source.

A source that keeps failing (STS throttling, Vault sealed, the IdP down)
should not be hammered by every refresh retry of every relay: after
``threshold`` consecutive failures the breaker opens and no call is made for
``open_interval`` seconds; then one probe goes through (half-open): success
closes it, failure opens it again.

Pure: time comes from the ``clock`` callable; the caller schedules.
"""

from __future__ import annotations

import enum
from typing import Callable


class State(enum.Enum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Breaker:
    def __init__(
        self,
        clock: Callable[[], float],
        threshold: int = 3,
        open_interval: float = 60.0,
        on_change: Callable[[State, State], object] = lambda old, new: None,
    ) -> None:
        self._clock = clock
        self._threshold = max(1, threshold)
        self._open_interval = open_interval
        #: Called with (old, new) on every state change: logs and a gauge.
        self._on_change = on_change
        self._state = State.CLOSED
        #: Consecutive failures while closed.
        self._failures = 0
        #: When the open breaker lets a probe through.
        self._opened_until = 0.0
        #: A half-open probe is out: let no second call through.
        self._probing = False

    @property
    def state(self) -> State:
        """The state now (an open breaker whose interval passed reads half-open)."""
        if self._state is State.OPEN and self._clock() >= self._opened_until:
            self._set(State.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """May a call to the source start now?  In half-open, only one may."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def retry_at(self) -> float:
        """When ``allow`` may answer True again (now, if it may already)."""
        if self.state is State.OPEN:
            return self._opened_until
        return self._clock()

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        self._set(State.CLOSED)

    def failure(self) -> None:
        self._probing = False
        if self._state is State.CLOSED:
            self._failures += 1
            if self._failures < self._threshold:
                return
        self._failures = 0
        self._opened_until = self._clock() + self._open_interval
        self._set(State.OPEN)

    def _set(self, new: State) -> None:
        old, self._state = self._state, new
        if old is not new:
            self._on_change(old, new)
