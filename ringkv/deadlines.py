"""Timeouts of many same-length waits without a timer each: the coordinator's request clock.

Every coordinated read and write of a node waits at most the node's request timeout for
its quorum. A ``loop.call_later`` per request, cancelled when it finishes, cost about 3 us
of a ~50 us get (timer heap insert and removal, a TimerHandle each). All these waits have
the same length, so their deadlines ascend in the order they were added: a FIFO queue and
one timer for the head do the same job (as the RPC client's ``send_timed`` does per
connection).

The queue holds objects with ``finished() -> bool`` and ``expire()``. :meth:`sweep` pops
the finished ones from the head, expires the unfinished ones whose deadline has passed,
and re-arms the one timer for the new head's deadline, or sooner, :data:`SWEEP_EVERY`
seconds on, while the queue is not empty. So finished entries are forgotten within
``SWEEP_EVERY`` seconds, or, queued behind a request still waiting, once it finishes
or expires (at most ``timeout`` later).
Invariants: an entry is expired at most once, never before its deadline, and no later
than its deadline plus the loop's timer latency; ``expire`` is never called on an
entry that reports ``finished()``.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

SWEEP_EVERY = 0.25  # seconds: most a finished entry may linger at the head's heels


class Expirable(Protocol):
    def finished(self) -> bool: ...

    def expire(self) -> None: ...


class Deadlines:
    """Expires each added entry ``timeout`` seconds after it was added, unless finished."""

    __slots__ = ("_loop", "timeout", "_queue", "_handle")

    def __init__(self, loop: Any, timeout: float) -> None:
        self._loop = loop
        self.timeout = timeout
        self._queue: deque[tuple[float, Expirable]] = deque()
        self._handle: Any = None

    def add(self, entry: Expirable) -> None:
        """Start ``entry``'s clock: ``entry.expire()`` runs once ``timeout`` has passed
        unless ``entry.finished()`` by then."""
        now = self._loop.time()
        deadline = now + self.timeout
        self._queue.append((deadline, entry))
        if self._handle is None:
            self._arm(min(deadline, now + SWEEP_EVERY))

    def __len__(self) -> int:
        return len(self._queue)

    def _arm(self, when: float) -> None:
        self._handle = self._loop.call_at(when, self.sweep)

    def sweep(self) -> None:
        """Drop finished entries, expire overdue ones, re-arm for the new head."""
        self._handle = None
        now = self._loop.time()
        queue = self._queue
        while queue:
            deadline, entry = queue[0]
            if entry.finished():
                queue.popleft()
                continue
            if deadline > now:
                break
            queue.popleft()
            entry.expire()
        if queue:
            self._arm(min(queue[0][0], now + SWEEP_EVERY))

    def close(self) -> None:
        """Stop the timer and forget every entry (the node is closing)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._queue.clear()


__all__ = ["Deadlines", "Expirable", "SWEEP_EVERY"]
