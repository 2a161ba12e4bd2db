"""A clock that moves only when told: deterministic time for tests and the simulator."""

from __future__ import annotations


class FakeClock:
    """Starts at ``start`` and advances only through :meth:`advance` or :meth:`set`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not run backwards")
        self._now += seconds

    def set(self, when: float) -> None:
        if when < self._now:
            raise ValueError("time does not run backwards")
        self._now = when
