"""Deadlines: one queue and one timer expire the coordinator's requests (virtual time)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from ringkv.deadlines import SWEEP_EVERY, Deadlines
from ringkv.sim.loop import SimLoop


class Op:
    """A request waiting for its outcome: ``finish`` discards its deadline, as ops do."""

    def __init__(self, loop: asyncio.AbstractEventLoop, log: list) -> None:
        self.loop, self.log = loop, log
        self.done = False
        self.expired_at: float | None = None
        self.key = -1

    def start(self, d: Deadlines) -> "Op":
        self.deadlines = d
        self.key = d.add(self)
        return self

    def finish(self) -> None:
        self.done = True
        self.deadlines.discard(self.key)

    def expire(self) -> None:
        assert not self.done, "expire() on a finished op"
        assert self.expired_at is None, "expired twice"
        self.expired_at = self.loop.time()
        self.log.append(self)


def _run(scenario) -> None:
    loop = SimLoop()
    try:
        loop.run_until_complete(scenario(loop))
    finally:
        loop.close()


def test_an_unfinished_op_expires_once_at_its_deadline():
    async def scenario(loop):
        d, log = Deadlines(loop, 2.0), []
        t0 = loop.time()
        op = Op(loop, log).start(d)
        await asyncio.sleep(1.99)
        assert log == []  # never before its deadline
        await asyncio.sleep(0.02)
        assert log == [op] and abs(op.expired_at - (t0 + 2.0)) < 1e-6
        await asyncio.sleep(5)
        assert log == [op] and len(d) == 0  # once, and forgotten

    _run(scenario)


def test_finished_ops_never_expire_and_are_not_kept():
    async def scenario(loop):
        d, log = Deadlines(loop, 2.0), []
        ops = [Op(loop, log).start(d) for _ in range(100)]
        refs = [weakref.ref(op) for op in ops]
        for op in ops:
            op.finish()
        assert len(d) == 0
        del ops, op
        gc.collect()
        assert all(r() is None for r in refs)  # the queue holds no finished op (GC cost)
        await asyncio.sleep(SWEEP_EVERY * 1.5)
        assert not d._queue  # their (deadline, id) pairs are gone by the next sweep
        await asyncio.sleep(5)
        assert log == []

    _run(scenario)


def test_each_of_a_mix_expires_at_its_own_deadline_in_order():
    async def scenario(loop):
        d, log = Deadlines(loop, 1.0), []
        ops = []
        for i in range(10):
            op = Op(loop, log)
            op.added = loop.time()
            ops.append(op.start(d))
            await asyncio.sleep(0.1)
        for op in ops[::2]:
            op.finish()  # every other one answered in time
        await asyncio.sleep(3)
        assert log == ops[1::2]
        for op in log:
            assert abs(op.expired_at - (op.added + 1.0)) < 1e-6

    _run(scenario)


def test_pairs_of_finished_ops_behind_a_waiting_one_go_once_it_expires():
    async def scenario(loop):
        d, log = Deadlines(loop, 2.0), []
        slow = Op(loop, log).start(d)
        for _ in range(50):
            Op(loop, log).start(d).finish()
        await asyncio.sleep(1.0)
        assert len(d) == 1 and len(d._queue) == 51  # their pairs wait behind the head
        await asyncio.sleep(1.0 + SWEEP_EVERY)
        assert log == [slow] and len(d) == 0 and not d._queue

    _run(scenario)


def test_close_stops_the_timer():
    async def scenario(loop):
        d, log = Deadlines(loop, 0.5), []
        Op(loop, log).start(d)
        d.close()
        await asyncio.sleep(2)
        assert log == [] and len(d) == 0

    _run(scenario)
