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

Besides asyncio's ready queue and ``TimerHandle`` heap, the simulator's own high-volume
callbacks use two cheaper structures: a heap of plain tuples (``call_fast``: message
deliveries, disk syncs) and FIFO queues per delay (``call_timeout``: RPC timeouts, nearly
all of them moot by the time they fire). Every structure is ordered by (time, insertion),
so the order in which callbacks run is a function of the program alone.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
from asyncio import base_events, events
from collections import deque
from typing import Any, Callable

_INF = float("inf")
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


NOWHERE = contextvars.Context()  # where callbacks of no node run (clients, the checker)


def here() -> contextvars.Context:
    """The calling process's context for :meth:`SimLoop.call_fast`: its incarnation's, so
    the callback dies with it (no copy: only the loop enters it, never nested)."""
    inc = CURRENT.get()
    return inc.context if inc is not None else NOWHERE


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


class _Handle(events.Handle):
    """``call_soon``'s handle without the debug-mode checks (the sim loop is never in
    debug mode: ``SimLoop.call_soon`` falls back to the stock path if it is)."""

    __slots__ = ()

    def __init__(self, callback: Callable[..., Any], args: tuple, loop: "SimLoop",
                 context: contextvars.Context) -> None:
        self._context = context
        self._loop = loop
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._repr = None
        self._source_traceback = None


class SimLoop(base_events.BaseEventLoop):
    """The virtual-time loop (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _VirtualSelector(self)
        self._clock_resolution = 1e-9
        self.callbacks_run = 0
        self.callbacks_dropped = 0
        # the fast timer heap: (when, seq, fn, args, context) tuples compared in C (seq is
        # unique), for the simulator's own high-volume timers (message deliveries, RPC
        # timeouts, disk syncs)
        self._fast: list[tuple[float, int, Callable[..., Any], tuple, contextvars.Context]] = []
        self._fast_seq = 0
        # timeouts: one FIFO per delay (a fixed delay from a non-decreasing now keeps each
        # one sorted), [when, seq, fn, args, context] lists, cancelled by clearing fn; off
        # the heap because there are many and nearly all are cancelled or moot by then
        self._timeouts: dict[float, deque[list]] = {}
        self._timeout_queues: tuple[deque[list], ...] = ()  # _timeouts.values()
        self._next_timeout = _INF  # <= the earliest head of _timeouts

    def call_fast(self, delay: float, fn: Callable[..., Any], context: contextvars.Context,
                  args: tuple = ()) -> None:
        """Run ``fn(*args)`` in ``context`` after ``delay``; cannot be cancelled (check
        state in fn). ``context`` is entered only by the loop, never nested."""
        self._fast_seq += 1
        heapq.heappush(self._fast, (self._now + delay, self._fast_seq, fn, args, context))

    def call_timeout(self, delay: float, fn: Callable[..., Any], context: contextvars.Context,
                     args: tuple = ()) -> list:
        """Like :meth:`call_fast`, for timeouts (few distinct delays); returns the entry,
        which ``entry[2] = None`` cancels. Timeouts due in one loop iteration run after
        the fast heap's callbacks due in it."""
        q = self._timeouts.get(delay)
        if q is None:
            q = self._timeouts[delay] = deque()
            self._timeout_queues = tuple(self._timeouts.values())
        self._fast_seq += 1
        when = self._now + delay
        entry = [when, self._fast_seq, fn, args, context]
        q.append(entry)
        if when < self._next_timeout:
            self._next_timeout = when
        return entry

    def call_soon(self, callback: Callable[..., Any], *args: Any,
                  context: contextvars.Context | None = None) -> events.Handle:
        """``BaseEventLoop.call_soon`` minus two frames and the debug checks (the hottest
        call in the simulator: every future callback and task step goes through it)."""
        if self._closed or self._debug:
            return super().call_soon(callback, *args, context=context)
        handle = _Handle(callback, args, self,
                         contextvars.copy_context() if context is None else context)
        self._ready.append(handle)
        return handle

    def discard_all(self) -> None:
        """Drop every pending callback and timer (after a run: what still references its
        tasks goes, so they can be destroyed at once)."""
        self._fast.clear()
        for q in self._timeout_queues:
            q.clear()
        self._next_timeout = _INF
        self._scheduled.clear()
        self._ready.clear()

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
        checks ``_stopping`` after each call; looping here saves a call per iteration).

        An iteration: jump to the earliest timer if nothing is ready; move the asyncio
        timers due within the clock resolution to the ready queue; run what was ready; run
        the due fast-heap callbacks, then the due timeouts. When nothing is ready and the
        next event is the fast heap's head alone (most events: message deliveries), only
        that callback runs, which is what the full iteration would have done."""
        heappop, heapify = heapq.heappop, heapq.heapify
        ready = self._ready
        popleft, append = ready.popleft, ready.append
        fast = self._fast
        resolution = self._clock_resolution
        run = dropped = 0
        try:
            while True:
                scheduled = self._scheduled
                if not ready and fast:
                    # The common case, a message delivery: the next event is the fast heap's
                    # head and nothing else is due before it. Run just that one, without the
                    # rest of an iteration (which would find nothing else to do).
                    when = fast[0][0]
                    if self._next_timeout <= when:
                        self._prune_timeouts()  # cancelled ones must not cost an iteration
                    if (not scheduled or when < scheduled[0]._when) and when < self._next_timeout:
                        _when, _seq, fn, args, ctx = heappop(fast)
                        if when > self._now:
                            self._now = when
                        inc = ctx.get(CURRENT)
                        if inc is not None and inc.dead:
                            dropped += 1
                        else:
                            run += 1
                            try:
                                ctx.run(fn, *args)
                            except (SystemExit, KeyboardInterrupt):
                                raise
                            except BaseException as exc:  # noqa: BLE001 - like Handle._run
                                self.call_exception_handler({
                                    "message": "exception in simulated callback", "exception": exc})
                        if self._stopping:
                            return
                        continue
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
                        when = _INF
                    if self._next_timeout < when:
                        when = self._next_timeout
                    elif when == _INF:
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
                    try:  # Handle._run, inlined
                        handle._context.run(handle._callback, *handle._args)
                    except (SystemExit, KeyboardInterrupt):
                        raise
                    except BaseException as exc:  # noqa: BLE001 - like Handle._run
                        self.call_exception_handler({"message": f"exception in callback {handle!r}",
                                                     "exception": exc, "handle": handle})
                while fast and fast[0][0] < end:
                    _when, _seq, fn, args, ctx = heappop(fast)
                    inc = ctx.get(CURRENT)
                    if inc is not None and inc.dead:
                        dropped += 1
                        continue
                    run += 1
                    try:
                        ctx.run(fn, *args)
                    except (SystemExit, KeyboardInterrupt):
                        raise
                    except BaseException as exc:  # noqa: BLE001 - like Handle._run
                        self.call_exception_handler({"message": "exception in simulated callback",
                                                     "exception": exc})
                if self._next_timeout < end:
                    r, d = self._run_timeouts(end)
                    run += r
                    dropped += d
                if self._stopping:
                    return
        finally:
            self.callbacks_run += run
            self.callbacks_dropped += dropped

    def _prune_timeouts(self) -> None:
        """Drop cancelled timeouts from the queues' heads; recompute ``_next_timeout``."""
        nxt = _INF
        for q in self._timeout_queues:
            while q and q[0][2] is None:
                q.popleft()
            if q and q[0][0] < nxt:
                nxt = q[0][0]
        self._next_timeout = nxt

    def _run_timeouts(self, end: float) -> tuple[int, int]:
        """Run the timeouts due before ``end`` (by delay, then in order); (run, dropped)."""
        run = dropped = 0
        for q in self._timeout_queues:  # a snapshot: a callback may add a delay
            while q and q[0][0] < end:
                _when, _seq, fn, args, ctx = q.popleft()
                if fn is None:
                    continue  # cancelled
                inc = ctx.get(CURRENT)
                if inc is not None and inc.dead:
                    dropped += 1
                    continue
                run += 1
                try:
                    ctx.run(fn, *args)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:  # noqa: BLE001 - like Handle._run
                    self.call_exception_handler({"message": "exception in simulated timeout",
                                                 "exception": exc})
        nxt = _INF  # recomputed: callbacks above may have added timeouts anywhere
        for q in self._timeout_queues:
            if q and q[0][0] < nxt:
                nxt = q[0][0]
        self._next_timeout = nxt
        return run, dropped


class SimClock:
    """A node's clock on the sim loop; ``skew`` shifts its wall clock only."""

    def __init__(self, loop: SimLoop, skew: float = 0.0) -> None:
        self._loop = loop
        self.skew = skew

    def now(self) -> float:
        return EPOCH + self.skew + self._loop._now

    def monotonic(self) -> float:
        return self._loop._now


__all__ = ["SimLoop", "SimClock", "Incarnation", "CURRENT", "Deadlock", "EPOCH", "NOWHERE", "here"]
