"""The time seam: logic asks a Clock for the time instead of reading the wall clock.

Invariant: no module under ringkv's pure core (ring, versions, membership, coordinator,
repair) calls time.* itself; it is handed a Clock. The real runtime uses SystemClock;
tests and the simulator use ringkv.testing.FakeClock, which moves only when told.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of time. ``now`` is wall-clock seconds (for timestamps that persist);
    ``monotonic`` is for measuring intervals and deadlines."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
