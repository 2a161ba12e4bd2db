"""A virtual-time asyncio event loop: the simulator's clock and scheduler.

:class:`SimLoop` is a ``BaseEventLoop`` whose ``time()`` is virtual. When no callback is
ready it does not block: it jumps virtual time to the earliest timer. Nothing real is
waited on (no sockets, no selector, no threads): ``run_in_executor`` runs the function
inline and returns a finished future, so code written for threads runs in one thread, in
a fixed order. Because the ready queue is FIFO and the timer heap breaks ties by
insertion order, the same program produces the same interleaving every time.

Process death: every simulated node incarnation runs in its own ``contextvars`` context
holding an :class:`Incarnation`. Handles and tasks inherit their creator's context, so a
callback "belongs" to the node that scheduled it; once the incarnation is ``dead`` the
loop silently discards its callbacks, like a killed process whose timers and tasks vanish.

``SimClock`` is the :class:`ringkv.clock.Clock` a node gets: ``monotonic`` is the loop's
time, ``now`` the same plus a per-node wall-clock offset (seeded skew).
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
from asyncio import base_events
from typing import Any, Callable

EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the simulated wall clock starts here


class Incarnation:
    """One life of one node (a process): dead ones get no more callbacks."""

    __slots__ = ("name", "dead", "context")

    def __init__(self, name: str) -> None:
        self.name = name
        self.dead = False
        self.context = contextvars.copy_context()
        self.context.run(CURRENT.set, self)

    def __repr__(self) -> str:
        return f"Incarnation({self.name!r}{', dead' if self.dead else ''})"


CURRENT: contextvars.ContextVar[Incarnation | None] = contextvars.ContextVar(
    "ringkv_sim_incarnation", default=None)


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is scheduled, yet the loop was asked to wait."""


class _VirtualSelector:
    """Stands in for the selector: 'waiting' means jumping virtual time ahead."""

    def __init__(self, loop: "SimLoop") -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list:
        loop = self._loop
        if timeout is None:
            raise Deadlock("simulation has nothing left to run")
        if timeout > 0 and loop._scheduled:
            loop._now = max(loop._now, loop._scheduled[0]._when)
        return []

    def close(self) -> None:
        pass


class SimLoop(base_events.BaseEventLoop):
    """The virtual-time loop (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _VirtualSelector(self)
        self._clock_resolution = 1e-9
        self.callbacks_run = 0
        self.callbacks_dropped = 0
        # the fast timer heap: (when, seq, fn, context) tuples compared in C, for the
        # simulator's own high-volume timers (message deliveries, RPC timeouts)
        self._fast: list[tuple[float, int, Callable[[], Any], contextvars.Context]] = []
        self._fast_seq = 0

    def call_fast(self, delay: float, fn: Callable[[], Any], context: contextvars.Context) -> None:
        """Run ``fn()`` in ``context`` after ``delay``; cannot be cancelled (check state in fn)."""
        self._fast_seq += 1
        heapq.heappush(self._fast, (self._now + delay, self._fast_seq, fn, context))

    # -- time ------------------------------------------------------------------------------
    def time(self) -> float:
        return self._now

    # -- what BaseEventLoop leaves to subclasses ------------------------------------------------
    def _process_events(self, event_list: list) -> None:
        pass

    def _write_to_self(self) -> None:
        pass  # call_soon_threadsafe: there are no other threads to wake us

    def run_in_executor(self, executor: Any, func: Callable, *args: Any) -> asyncio.Future:
        fut = self.create_future()
        try:
            fut.set_result(func(*args))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            fut.set_exception(exc)
        return fut

    # -- BaseEventLoop._run_once, plus dropping dead nodes' callbacks --------------------------
    def _run_once(self) -> None:
        """Run iterations until ``stop()`` was called (``run_forever`` calls this in a loop and
        checks ``_stopping`` after each call; looping here saves a call per iteration and
        runs exactly the same iterations in the same order)."""
        heappop, heapify = heapq.heappop, heapq.heapify
        ready = self._ready
        popleft, append = ready.popleft, ready.append
        fast = self._fast
        resolution = self._clock_resolution
        run = dropped = 0
        try:
            while True:
                scheduled = self._scheduled
                if len(scheduled) > 512 and self._timer_cancelled_count * 2 > len(scheduled):
                    live = []
                    for handle in scheduled:
                        if handle._cancelled:
                            handle._scheduled = False
                        else:
                            live.append(handle)
                    heapify(live)
                    self._scheduled = scheduled = live
                    self._timer_cancelled_count = 0
                while scheduled and scheduled[0]._cancelled:
                    self._timer_cancelled_count -= 1
                    heappop(scheduled)._scheduled = False
                if not ready and not self._stopping:
                    if scheduled and (not fast or scheduled[0]._when <= fast[0][0]):
                        when = scheduled[0]._when
                    elif fast:
                        when = fast[0][0]
                    else:
                        raise Deadlock("simulation has nothing left to run")
                    if when > self._now:
                        self._now = when
                end = self._now + resolution
                while scheduled and scheduled[0]._when < end:
                    handle = heappop(scheduled)
                    handle._scheduled = False
                    append(handle)
                for _ in range(len(ready)):
                    handle = popleft()
                    if handle._cancelled:
                        continue
                    inc = handle._context.get(CURRENT)
                    if inc is not None and inc.dead:
                        dropped += 1
                        continue
                    run += 1
                    handle._run()
                while fast and fast[0][0] < end:
                    _when, _seq, fn, ctx = heappop(fast)
                    inc = ctx.get(CURRENT)
                    if inc is not None and inc.dead:
                        dropped += 1
                        continue
                    run += 1
                    try:
                        ctx.run(fn)
                    except (SystemExit, KeyboardInterrupt):
                        raise
                    except BaseException as exc:  # noqa: BLE001 - like Handle._run
                        self.call_exception_handler({"message": "exception in simulated callback",
                                                     "exception": exc})
                if self._stopping:
                    return
        finally:
            self.callbacks_run += run
            self.callbacks_dropped += dropped


class SimClock:
    """A node's clock on the sim loop; ``skew`` shifts its wall clock only."""

    def __init__(self, loop: SimLoop, skew: float = 0.0) -> None:
        self._loop = loop
        self.skew = skew

    def now(self) -> float:
        return EPOCH + self.skew + self._loop._now

    def monotonic(self) -> float:
        return self._loop._now


__all__ = ["SimLoop", "SimClock", "Incarnation", "CURRENT", "Deadlock", "EPOCH"]
