"""The forwarding shell (ringkv.moved_writes) on production nodes in the simulator.

A replica write that lands on a node that is no replica of the key (here: sent by an
operator standing in for a coordinator with a stale ring) is applied there and forwarded
to the key's replicas; a forward that fails becomes a durable hint that hinted handoff
delivers; a forward the full hint store refuses is counted, not silently lost; a copy
marked as forwarded is never forwarded again.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from ringkv import versions
from ringkv.ring import token_for
from ringkv.sim.cluster import PORT, SimCluster
from ringkv.sim.network import SimNetwork, SimRpcClient
from tests.sim.simhelp import run_cluster


def _run(scenario: Callable[[dict, SimNetwork, SimRpcClient], Awaitable[None]]) -> None:
    async def on_cluster(cluster: SimCluster, net: SimNetwork) -> None:
        await scenario({s.name: s.node for s in cluster.nodes}, net, SimRpcClient(net, "op"))

    run_cluster(on_cluster, net_seed=11, cluster_seed=12, prefix="ringkv-moved-")


def _key_and_outsider(nodes: dict, prefix: bytes) -> tuple[bytes, list[str], str]:
    """A key, its replicas, and a node that is not one of them."""
    ring = nodes["n1"].ring
    key = prefix + b"-1"
    replicas = ring.replicas(token_for(key))
    outsider = next(n for n in sorted(nodes) if n not in replicas)
    return key, replicas, outsider


def _put_body(key: bytes, value: bytes, **extra: Any) -> dict:
    skey = token_for(key).to_bytes(8, "big") + key
    vs = versions.encode(versions.update(versions.EMPTY, {}, "x1", value, 1.0))
    return {"skey": skey, "vs": vs, **extra}


def _values(node: Any, key: bytes) -> list[bytes]:
    raw = node.engine.get(token_for(key).to_bytes(8, "big") + key)
    return [] if raw is None else versions.values(versions.decode(raw))


def test_a_non_replica_applies_and_forwards_to_every_replica() -> None:
    async def scenario(nodes: dict, net: SimNetwork, op: SimRpcClient) -> None:
        key, replicas, x = _key_and_outsider(nodes, b"a")
        await op.call(x, PORT, "replica_put", _put_body(key, b"v"), 5.0)
        await asyncio.sleep(1.0)
        assert _values(nodes[x], key) == [b"v"]  # applied where it landed, too
        assert all(_values(nodes[r], key) == [b"v"] for r in replicas)
        assert nodes[x].counters["forwarded_after_move"] == len(replicas)
        assert all(nodes[r].counters["forwarded_after_move"] == 0 for r in replicas)

    _run(scenario)


def test_a_copy_marked_forwarded_is_not_forwarded_again() -> None:
    async def scenario(nodes: dict, net: SimNetwork, op: SimRpcClient) -> None:
        key, replicas, x = _key_and_outsider(nodes, b"b")
        await op.call(x, PORT, "replica_put", _put_body(key, b"v", forwarded=True), 5.0)
        batch = _put_body(key + b"2", b"w")
        await op.call(x, PORT, "replica_put_batch",
                      {"items": [[batch["skey"], batch["vs"]]], "forwarded": True}, 5.0)
        await asyncio.sleep(1.0)
        assert _values(nodes[x], key) == [b"v"] and _values(nodes[x], key + b"2") == [b"w"]
        assert nodes[x].counters["forwarded_after_move"] == 0
        assert not any(_values(nodes[r], key) for r in replicas)

    _run(scenario)


def test_a_failed_forward_becomes_a_hint_that_handoff_delivers() -> None:
    async def scenario(nodes: dict, net: SimNetwork, op: SimRpcClient) -> None:
        key, replicas, x = _key_and_outsider(nodes, b"c")
        cut = replicas[0]
        net.partition([x], [cut])
        await op.call(x, PORT, "replica_put", _put_body(key, b"v"), 5.0)
        await asyncio.sleep(2.0)  # the forward to ``cut`` timed out: a hint now
        assert nodes[x].counters["forward_hinted"] == 1
        assert nodes[x].handoff.store.pending().get(cut) == 1
        assert _values(nodes[cut], key) == []
        net.heal()
        await asyncio.sleep(5.0)
        assert _values(nodes[cut], key) == [b"v"]
        assert not nodes[x].handoff.store.pending().get(cut)
        assert nodes[x].counters["forward_dropped"] == 0

    _run(scenario)


def test_a_forward_the_full_hint_store_refuses_is_counted() -> None:
    async def scenario(nodes: dict, net: SimNetwork, op: SimRpcClient) -> None:
        key, replicas, x = _key_and_outsider(nodes, b"d")
        cut = replicas[0]
        nodes[x].handoff.store.max_per_target = 0  # a full store ([hints] max_hints_per_target)
        net.partition([x], [cut])
        await op.call(x, PORT, "replica_put", _put_body(key, b"v"), 5.0)
        await asyncio.sleep(2.0)
        counters = nodes[x].counters
        assert counters["forward_dropped"] == 1 and counters["forward_hinted"] == 0
        assert nodes[x].handoff.status()["hints_dropped_overflow"] == 1
        assert all(_values(nodes[r], key) == [b"v"] for r in replicas[1:])  # the others have it
        assert nodes[x].status()["counters"]["forward_dropped"] == 1  # visible in /status

    _run(scenario)
