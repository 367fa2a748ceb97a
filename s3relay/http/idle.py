# -*- test-case-name: tests.unit.test_channel -*-
"""A connection's idle timer: it fires only when no byte moved either way.

Twisted's own timeout is reset only by reads and is off while a response is
written, so it cuts a long download and spares a stalled one.  This timer
is reset by progress in either direction (``touch``), holds while the
client waits for the upstream's answer (``hold``: the exchange's
``first_byte_timeout`` runs then), and lets bytes that arrived while this
process was held up count before it fires.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall

#: Seconds a check may run late before it suspects this process, not the
#: peer, stood still (see ``_check``).
LATE = 0.5


def cancel(call: IDelayedCall | None) -> None:
    """Cancel ``call`` unless it already ran (or was cancelled)."""
    if call is not None and call.active():
        call.cancel()


class IdleTimer:
    """Calls ``expired`` once ``seconds`` pass without ``touch``."""

    def __init__(
        self,
        seconds: float | None,
        now: Callable[[], float],
        call_later: Callable[..., IDelayedCall],
        expired: Callable[[], Any],
    ) -> None:
        #: None: never idle (``[server] idle_timeout`` off).
        self.seconds = seconds
        self._now = now
        self._call_later = call_later
        self._expired = expired
        self._last_progress = now()
        self._due = 0.0
        self._late_checked = False
        self._call: IDelayedCall | None = None
        #: The client waits for the upstream: not idle.
        self.held = False
        self._stopped = False

    def touch(self) -> None:
        """Bytes moved: the connection is not idle."""
        self._last_progress = self._now()
        self._late_checked = False

    def arm(self) -> None:
        """Run, unless held, stopped, or running already."""
        if self.seconds is None or self._stopped or self.held:
            return
        if self._call is None or not self._call.active():
            self._call = self._after(self.seconds)

    def hold(self) -> None:
        if not self.held and not self._stopped:
            self.held = True
            cancel(self._call)
            self._call = None

    def release(self) -> None:
        if self.held:
            self.held = False
            self.touch()
            self.arm()

    def stop(self) -> None:
        """For good: the connection is closing."""
        self._stopped = True
        cancel(self._call)
        self._call = None

    def _after(self, seconds: float) -> IDelayedCall:
        self._due = self._now() + seconds
        return self._call_later(seconds, self._check)

    def _check(self) -> None:
        self._call = None
        if self.seconds is None or self._stopped or self.held:
            return
        now = self._now()
        left = self._last_progress + self.seconds - now
        if left > 0:
            # Progress since the timer was set: check again when it could expire.
            self._call = self._after(left)
            return
        if now - self._due > LATE and not self._late_checked:
            # The timer ran late: this process was held up (a loaded host), and
            # bytes that arrived meanwhile are not read yet.  Let them count
            # first: an iteration's I/O runs before the next timers.
            self._late_checked = True
            self._call = self._call_later(0, self._check)
            self._due = now
            return
        self._late_checked = False
        self._expired()
