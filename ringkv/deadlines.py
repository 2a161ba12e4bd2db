"""Timeouts of many same-length waits without a timer each: the coordinator's request clock.

Every coordinated read and write of a node waits at most the node's request timeout for
its quorum. A ``loop.call_later`` per request, cancelled when it finishes, cost about 3 us
of a ~50 us get (timer heap insert and removal, a TimerHandle each). All these waits have
the same length, so their deadlines ascend in the order they were added: a FIFO queue and
one timer for the head do the same job (as the RPC client's ``send_timed`` does per
connection).

The queue holds ``(deadline, id)`` pairs and a dict the entries still waiting, by id.
An entry (anything with ``expire()``) is added, and discarded by its owner once finished,
which only pops it from the dict. The finished entries themselves are not kept: holding
every finished request for up to :data:`SWEEP_EVERY` seconds (a first version did) kept
thousands of ops, futures and quorums alive past the young GC generations, which cost
more than the timers saved (measured: +5 us per get). :meth:`sweep` pops the ids of
discarded entries from the head, expires the waiting ones whose deadline has passed,
and re-arms the one timer for the new head's deadline, or sooner, :data:`SWEEP_EVERY`
seconds on, so the pairs of discarded entries do not pile up.
Invariants: an entry is expired at most once, never after it was discarded, never
before its deadline, and no later than its deadline plus the loop's timer latency.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any, Protocol

SWEEP_EVERY = 0.25  # seconds: most a finished entry may linger at the head's heels


class Expirable(Protocol):
    def expire(self) -> None: ...


class Deadlines:
    """Expires each added entry ``timeout`` seconds after it was added, unless discarded."""

    __slots__ = ("_loop", "timeout", "_queue", "_waiting", "_ids", "_handle")

    def __init__(self, loop: Any, timeout: float) -> None:
        self._loop = loop
        self.timeout = timeout
        self._queue: deque[tuple[float, int]] = deque()
        self._waiting: dict[int, Expirable] = {}
        self._ids = itertools.count()
        self._handle: Any = None

    def add(self, entry: Expirable) -> int:
        """Start ``entry``'s clock: ``entry.expire()`` runs once ``timeout`` has passed
        unless :meth:`discard` was called with the id returned."""
        now = self._loop.time()
        deadline = now + self.timeout
        key = next(self._ids)
        self._waiting[key] = entry
        self._queue.append((deadline, key))
        if self._handle is None:
            self._arm(min(deadline, now + SWEEP_EVERY))
        return key

    def discard(self, key: int) -> None:
        """The entry added as ``key`` finished: never expire it (idempotent)."""
        self._waiting.pop(key, None)

    def __len__(self) -> int:
        """Entries still waiting."""
        return len(self._waiting)

    def _arm(self, when: float) -> None:
        self._handle = self._loop.call_at(when, self.sweep)

    def sweep(self) -> None:
        """Forget discarded entries, expire overdue ones, re-arm for the new head."""
        self._handle = None
        now = self._loop.time()
        queue, waiting = self._queue, self._waiting
        while queue:
            deadline, key = queue[0]
            if key not in waiting:
                queue.popleft()
                continue
            if deadline > now:
                break
            queue.popleft()
            waiting.pop(key).expire()
        if queue:
            self._arm(min(queue[0][0], now + SWEEP_EVERY))

    def close(self) -> None:
        """Stop the timer and forget every entry (the node is closing)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._queue.clear()
        self._waiting.clear()


__all__ = ["Deadlines", "Expirable", "SWEEP_EVERY"]
