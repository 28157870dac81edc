"""Injectable clocks: rules, lifecycle and escalation take a `Clock` so tests advance time instead of sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current Unix time in seconds."""

    def now(self) -> float:
        """Current Unix time, seconds (UTC)."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        """Current Unix time from the operating system."""
        return time.time()


class ManualClock:
    """A clock that moves only when told to; for tests and simulations."""

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        """The time this clock was last set or advanced to."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds` (never backwards) and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (asked to advance {seconds} s)")
        self._now += seconds
        return self._now

    def set(self, t: float) -> None:
        """Jump to Unix time `t`, which must not be earlier than now."""
        if t < self._now:
            raise ValueError(f"a clock cannot go backwards (from {self._now} to {t})")
        self._now = t
