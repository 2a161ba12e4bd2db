"""Deadlines: one queue and one timer expire the coordinator's requests (virtual time)."""

from __future__ import annotations

import asyncio

from ringkv.deadlines import SWEEP_EVERY, Deadlines
from ringkv.sim.loop import SimLoop


class Op:
    """A request waiting for its outcome: finished once ``done`` is set."""

    def __init__(self, loop: asyncio.AbstractEventLoop, log: list) -> None:
        self.loop, self.log = loop, log
        self.done = False
        self.expired_at: float | None = None

    def finished(self) -> bool:
        return self.done

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
        op = Op(loop, log)
        d.add(op)
        await asyncio.sleep(1.99)
        assert log == []  # never before its deadline
        await asyncio.sleep(0.02)
        assert log == [op] and abs(op.expired_at - (t0 + 2.0)) < 1e-6
        await asyncio.sleep(5)
        assert log == [op] and len(d) == 0  # once, and forgotten

    _run(scenario)


def test_finished_ops_never_expire_and_are_forgotten():
    async def scenario(loop):
        d, log = Deadlines(loop, 2.0), []
        ops = [Op(loop, log) for _ in range(100)]
        for op in ops:
            d.add(op)
            op.done = True
        await asyncio.sleep(SWEEP_EVERY * 1.5)
        assert len(d) == 0  # dropped at the next sweep, long before their deadline
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
            d.add(op)
            ops.append(op)
            await asyncio.sleep(0.1)
        for op in ops[::2]:
            op.done = True  # every other one answered in time
        await asyncio.sleep(3)
        assert log == ops[1::2]
        for op in log:
            assert abs(op.expired_at - (op.added + 1.0)) < 1e-6

    _run(scenario)


def test_finished_ops_behind_a_waiting_one_go_once_it_expires():
    async def scenario(loop):
        d, log = Deadlines(loop, 2.0), []
        slow = Op(loop, log)
        d.add(slow)
        quick = [Op(loop, log) for _ in range(50)]
        for op in quick:
            d.add(op)
            op.done = True
        await asyncio.sleep(1.0)
        assert len(d) == 51  # held behind the head, which still waits
        await asyncio.sleep(1.0 + SWEEP_EVERY)
        assert log == [slow] and len(d) == 0

    _run(scenario)


def test_close_stops_the_timer():
    async def scenario(loop):
        d, log = Deadlines(loop, 0.5), []
        d.add(Op(loop, log))
        d.close()
        await asyncio.sleep(2)
        assert log == [] and len(d) == 0

    _run(scenario)
