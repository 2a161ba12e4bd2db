"""The simulator's parts: virtual-time loop, process death, network faults, crashing disk."""

from __future__ import annotations

import asyncio
import contextvars
import random

import pytest

from ringkv.errors import RingkvError, Timeout, Unavailable
from ringkv.net.transport import is_no_reply, is_peer_unreachable
from ringkv.sim.disk import NodeDisk
from ringkv.sim.loop import Deadlock, Incarnation, SimClock, SimLoop
from ringkv.sim.network import SimNetwork, SimRpcClient, SimRpcServer
from ringkv.sim.trace import Trace


def _run(coro_fn):
    loop = SimLoop()
    try:
        return loop, loop.run_until_complete(coro_fn(loop))
    finally:
        loop.close()


def test_virtual_time_jumps_and_never_blocks() -> None:
    async def main(loop: SimLoop) -> float:
        await asyncio.sleep(3600.0)
        await asyncio.wait_for(asyncio.sleep(1.0), timeout=5.0)
        return loop.time()

    loop, t = _run(main)
    assert t == pytest.approx(3601.0)
    assert SimClock(loop, skew=2.0).now() - SimClock(loop).now() == pytest.approx(2.0)


def test_executor_runs_inline() -> None:
    async def main(loop: SimLoop) -> tuple:
        t0 = loop.time()
        v = await loop.run_in_executor(None, sum, [1, 2, 3])
        return v, loop.time() - t0

    assert _run(main)[1] == (6, 0.0)


def test_dead_incarnation_callbacks_are_dropped() -> None:
    fired: list[str] = []

    async def main(loop: SimLoop) -> None:
        a, b = Incarnation("a"), Incarnation("b")
        a.context.run(loop.call_later, 1.0, fired.append, "a")
        b.context.run(loop.call_later, 1.0, fired.append, "b")
        a.dead = True
        await asyncio.sleep(2.0)

    _run(main)
    assert fired == ["b"]


def test_deadlock_is_reported() -> None:
    async def main(loop: SimLoop) -> None:
        await loop.create_future()  # nobody will ever set it

    with pytest.raises(Deadlock):
        _run(main)


def _pair(loop: SimLoop, seed: int = 1) -> tuple[SimNetwork, SimRpcClient]:
    net = SimNetwork(loop, random.Random(seed), Trace())
    net.nodes.update({"a", "b"})
    server = SimRpcServer(net, lambda method, body, peer: {"echo": body["x"]}, "b", 1)
    loop.run_until_complete(server.start())
    return net, SimRpcClient(net, "a")


def test_rpc_round_trip_and_errors() -> None:
    loop = SimLoop()
    net, client = _pair(loop)
    assert loop.run_until_complete(client.call("b", 1, "m", {"x": b"1"}, 1.0)) == {"echo": b"1"}
    with pytest.raises(Unavailable) as refused:
        loop.run_until_complete(client.call("nobody", 1, "m", {"x": 1}, 1.0))
    assert is_peer_unreachable(refused.value)
    net.partition(["a"], ["b"], one_way=True)
    with pytest.raises(Timeout) as lost:
        loop.run_until_complete(client.call("b", 1, "m", {"x": 1}, 1.0))
    assert is_no_reply(lost.value)
    loop.close()


def test_one_way_partition_loses_replies_only_in_that_direction() -> None:
    loop = SimLoop()
    net, client = _pair(loop)
    net.block("b", "a")  # requests arrive, replies do not
    with pytest.raises(Timeout):
        loop.run_until_complete(client.call("b", 1, "m", {"x": 1}, 1.0))
    assert net.delivered == 1
    loop.close()


def test_loss_and_duplication_rates() -> None:
    loop = SimLoop()
    net, client = _pair(loop, seed=3)
    net.faults.loss, net.faults.duplicate = 0.2, 0.2

    async def many() -> int:
        ok = 0
        for i in range(300):
            try:
                await client.call("b", 1, "m", {"x": i}, 0.5)
                ok += 1
            except RingkvError:
                pass
        return ok

    ok = loop.run_until_complete(many())
    loop.close()
    assert 150 < ok < 270  # ~0.8 * 0.8 of the round trips survive
    assert net.duplicated > 50 and net.dropped > 50


def test_disk_crash_keeps_only_synced_bytes_and_fences_old_views() -> None:
    disk = NodeDisk()
    view = disk.view()
    view.makedirs("/d")
    f = view.open_write("/d/x")
    f.write(b"durable")
    f.sync()
    view.sync_dir("/d")
    f.write(b"-lost")
    disk.crash()
    assert disk.view().read_all("/d/x") == b"durable"
    with pytest.raises(OSError):
        view.read_all("/d/x")
    with pytest.raises(OSError):
        f.write(b"zombie")


def test_runs_outside_any_node_have_no_incarnation() -> None:
    from ringkv.sim.loop import CURRENT

    assert contextvars.Context().run(CURRENT.get) is None
