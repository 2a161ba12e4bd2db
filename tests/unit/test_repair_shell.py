"""The repair shell (ringkv.repair) without sockets: two fake nodes whose RPC client calls
the other's handlers in process, over dict-backed engines. No sleeps: jobs are awaited."""

from __future__ import annotations

import asyncio
import bisect
from types import SimpleNamespace

import pytest

from ringkv import versions
from ringkv.config import RepairConfig
from ringkv.errors import InvalidRequest
from ringkv.repair import Repairer
from ringkv.ring import NodeInfo, Ring, storage_key
from ringkv.testing.fake_clock import FakeClock


class DictEngine:
    """The slice of the engine API repair uses, merge mode."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def scan(self, start: bytes = b"", end: bytes | None = None):
        keys = sorted(self.data)
        i = bisect.bisect_left(keys, start)
        for k in keys[i:]:
            if end is not None and k >= end:
                break
            yield k, self.data[k]

    def get(self, key: bytes):
        return self.data.get(key)

    async def aput(self, key: bytes, value: bytes) -> None:
        old = self.data.get(key)
        self.data[key] = value if old is None else versions.merge_bytes(old, value)


class Router:
    """An RpcClient stand-in: calls the handlers of the node at (host, port)."""

    def __init__(self) -> None:
        self.nodes: dict[int, SimpleNamespace] = {}

    async def call(self, host, port, method, body, timeout):
        reply = self.nodes[port]._handlers[method](body)
        if asyncio.iscoroutine(reply):
            reply = await reply
        return reply


def make_nodes(interval: float = 0.0):
    ring = Ring([NodeInfo("a", (1 << 62,), port=1), NodeInfo("b", (3 << 62,), port=2)], {"dc1": 2})
    router, nodes = Router(), []
    clock = FakeClock()
    for i, nid in enumerate(("a", "b")):
        node = SimpleNamespace(node_id=nid, ring=ring, engine=DictEngine(), rpc=router,
                               _addr={"a": ("h", 1), "b": ("h", 2)}, alive=lambda n: True,
                               clock=clock,
                               config=SimpleNamespace(repair=RepairConfig(interval_s=interval)))
        node.repairer = Repairer(node)
        node.engine = node.repairer.track(node.engine)  # as Node.start does
        node._handlers = node.repairer.handlers()
        router.nodes[i + 1] = node
        nodes.append(node)
    return nodes


def vs_of(value: bytes) -> bytes:
    return versions.encode(versions.update(versions.EMPTY, {}, "w", value, 1.0))


async def finish(node) -> dict:
    await node.repairer._task
    return node.repairer.rpc_repair_status({})


async def test_a_job_repairs_both_nodes_and_a_second_finds_nothing():
    a, b = make_nodes()
    for i in range(200):
        k = storage_key(b"k%d" % i)
        (a if i % 10 else b).engine.data[k] = vs_of(b"v%d" % i)
        if i % 10 and i % 3:
            b.engine.data[k] = a.engine.data[k]
    job = a.repairer.rpc_repair({})
    assert job["already_running"] is False
    assert a.repairer.rpc_repair({})["already_running"] is True  # one job at a time
    status = await finish(a)
    assert status["state"] == "done" and status["ranges_total"] == 1 and status["sessions"] == 1
    assert a.engine.data == b.engine.data and len(a.engine.data) == 200
    assert status["keys_received"] == 20 and status["keys_sent"] == 60
    a.repairer.rpc_repair({})
    again = await finish(a)
    assert again["keys_sent"] == again["keys_received"] == 0 and again["rounds"] == 1
    roots = [await n._handlers["merkle_root"]({"start": 0, "end": 0}) for n in (a, b)]
    assert roots[0] == roots[1] and roots[0]["count"] == 200


async def test_a_range_job_touches_only_that_range():
    a, b = make_nodes()
    keys = [storage_key(b"k%d" % i) for i in range(100)]
    for k in keys:
        a.engine.data[k] = vs_of(k)
    a.repairer.rpc_repair({"start": 0, "end": 1 << 63})
    status = await finish(a)
    assert status["state"] == "done"
    assert b.engine.data and all(int.from_bytes(k[:8], "big") <= 1 << 63 for k in b.engine.data)


async def test_a_down_peer_is_skipped_and_counted():
    a, b = make_nodes()
    a.alive = lambda n: n == "a"
    a.repairer.rpc_repair({})
    status = await finish(a)
    assert status["skipped_peers"] == 1 and status["sessions"] == 0


async def test_bad_requests_are_refused():
    a, _ = make_nodes()
    with pytest.raises(InvalidRequest):
        await a._handlers["merkle_level"]({"sid": 99, "level": 0, "step": 1, "nodes": b""})
    with pytest.raises(InvalidRequest):
        await a._handlers["repair_put"]({"items": [[b"short", b"x"]]})
    with pytest.raises(InvalidRequest):
        await a._handlers["merkle_open"]({"start": -1, "end": 0, "depth": 3})
    with pytest.raises(InvalidRequest):
        a.repairer.rpc_repair_status({"id": 5})


async def test_the_schedule_starts_a_job_and_rearms():
    a, _ = make_nodes(interval=3600.0)
    a.repairer.start()
    assert a.repairer._timer is not None
    a.repairer._on_timer()  # what the timer does when it fires
    assert (await finish(a))["state"] == "done"
    a.repairer.close()


async def test_a_session_whose_peer_tree_expired_is_retried():
    a, b = make_nodes()
    for i in range(50):
        a.engine.data[storage_key(b"x%d" % i)] = vs_of(b"x")
    level = b._handlers["merkle_level"]
    calls = []

    async def flaky(body):
        calls.append(body)
        if len(calls) == 1:
            raise InvalidRequest("unknown or expired merkle session")
        return await level(body)

    b._handlers["merkle_level"] = flaky
    a.repairer.rpc_repair({})
    status = await finish(a)
    assert status["state"] == "done" and status["keys_sent"] == 50 and not status["errors"]
    assert len(calls) >= 2


async def test_a_peer_session_that_never_closes_releases_its_tree_after_the_ttl():
    from ringkv.repair import TREE_TTL_S

    a, b = make_nodes()
    for i in range(40):
        await b.engine.aput(storage_key(b"y%d" % i), vs_of(b"y"))
    from ringkv import antientropy as ae

    (task,) = ae.plan(b.ring.ranges(), b.ring.replicas, "b")
    opened = {"start": task.start, "end": task.end, "depth": 20}
    reply = await b._handlers["merkle_open"](dict(opened, root=1, count=0))  # a's range view
    assert reply["sid"] and b.repairer.store.view()["trees"] == 1
    b.repairer.rpc_repair({})  # b's own job finds its tree lent: a private build
    await finish(b)
    assert b.repairer.store.view()["busy_builds"] == 1
    b.clock.advance(TREE_TTL_S + 1)
    b.repairer.rpc_repair({})  # the sweep takes the tree back first
    status = await finish(b)
    assert status["state"] == "done" and status["tree_refreshes"] == 1  # the kept tree, back
    assert status["tree_full_builds"] == 0 and b.repairer.store.view()["busy_builds"] == 1
