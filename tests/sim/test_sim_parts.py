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


def test_timeouts_run_in_time_order_can_be_cancelled_and_die_with_their_process() -> None:
    fired: list[tuple[str, float]] = []

    async def main(loop: SimLoop) -> None:
        note = lambda name: fired.append((name, loop.time()))  # noqa: E731
        here = contextvars.Context()
        loop.call_timeout(2.0, note, here, ("b",))
        loop.call_timeout(1.0, note, here, ("a",))
        loop.call_fast(1.5, note, here, ("fast",))
        loop.call_timeout(1.0, note, here, ("cancelled",))[2] = None
        dead = Incarnation("dead")
        loop.call_timeout(1.0, note, dead.context, ("dead",))
        dead.dead = True
        await asyncio.sleep(0.5)
        loop.call_timeout(1.0, note, here, ("c",))  # due at 1.5, after the earlier 1.0 ones
        await asyncio.sleep(3.0)

    _run(main)
    assert fired == [("a", 1.0), ("fast", 1.5), ("c", 1.5), ("b", 2.0)]


def test_async_handlers_run_eagerly_and_bad_replies_become_errors() -> None:
    loop = SimLoop()
    net = SimNetwork(loop, random.Random(1), Trace())
    tasks: list[object] = []

    async def slow(body: dict) -> dict:
        tasks.append(asyncio.current_task())  # None: driven without a Task, as on TCP
        await asyncio.sleep(0.25)
        return {"n": body["n"] + 1}

    def handler(method: str, body: dict, peer: str):
        if method == "slow":
            return slow(body)
        return ["not", "a", "map"]

    server = SimRpcServer(net, handler, "b", 1)
    loop.run_until_complete(server.start())
    client = SimRpcClient(net, "a")
    fut = client.call("b", 1, "slow", {"n": 1}, 1.0)
    assert isinstance(fut, asyncio.Future)  # a plain future: no Task per request
    assert loop.run_until_complete(fut) == {"n": 2}
    assert tasks == [None]
    with pytest.raises(RingkvError, match="internal error: TypeError"):
        loop.run_until_complete(client.call("b", 1, "bad", {}, 1.0))
    loop.close()


def test_node_ops_fast_path_times_out_and_cancels_its_timer() -> None:
    from ringkv import node_ops

    loop = SimLoop()
    net, client = _pair(loop)

    async def main() -> tuple:
        ok = await node_ops.request(client, "b", 1, "m", {"x": 1}, 0.5)
        net.block("b", "a")
        t0 = loop.time()
        with pytest.raises(Timeout) as lost:
            await node_ops.request(client, "b", 1, "m", {"x": 2}, 0.5)
        return ok, loop.time() - t0, lost.value

    ok, waited, err = loop.run_until_complete(main())
    assert ok == {"echo": 1} and waited == pytest.approx(0.5) and is_no_reply(err)
    assert not client._pending  # resolved requests leave nothing behind
    loop.close()


def test_a_run_that_acknowledged_no_write_is_not_ok(monkeypatch) -> None:
    """A run where every put fails (here: minting raises) checked nothing, so it must not
    pass: it would hide any bug that breaks writes, including in the checker's own hooks."""
    from ringkv import versions
    from tests.sim.simhelp import sim

    def broken(*args, **kwargs):
        raise TypeError("minting is broken")

    monkeypatch.setattr(versions, "update", broken)
    res = sim(1, duration=10.0)
    assert not res.ok and res.acked_writes == 0
    assert "no write was acknowledged" in " ".join(res.failures)
