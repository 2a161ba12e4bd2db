"""Merkle anti-entropy with real processes: a replica that missed writes while it was
down is repaired by ``ringkv repair``, a second repair finds nothing, and every replica
ends with an equal Merkle root.

Divergence is made directly with ``replica_put`` (to two replicas only while the third
is killed, and to the third only), so hinted handoff and read repair cannot heal it
first. Three nodes, N = 3: every node replicates every key.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from ringkv import versions
from ringkv.net.transport import RpcClient
from ringkv.ring import storage_key
from ringkv.testing import cluster as tc

MISSED = 300  # keys written to n1 and n2 while n3 is down
ONLY_N3 = 20  # keys only n3 holds


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("repair")
    c = tc.start(3, base, replication={"dc1": 3}, num_tokens=8,
                 config={"repair": {"interval_s": 0.0},
                         "cluster": {"request_timeout_ms": 1500}}, timeout=90)
    try:
        yield c
    finally:
        c.close()


def vs_of(value: bytes) -> bytes:
    return versions.encode(versions.update(versions.EMPTY, {}, "writer", value, time.time()))


async def put_on(rpc: RpcClient, nodes: list[tc.NodeHandle], keys: list[bytes]) -> None:
    sets = {k: vs_of(k) for k in keys}  # one version per key: the same dot on every replica
    calls = [rpc.call(n.host, n.port, "replica_put", {"skey": storage_key(k), "vs": sets[k]}, 5.0)
             for n in nodes for k in keys]
    await asyncio.gather(*calls)


async def holds(rpc: RpcClient, node: tc.NodeHandle, key: bytes) -> bool:
    reply = await rpc.call(node.host, node.port, "replica_get", {"skey": storage_key(key)}, 5.0)
    return reply.get("vs") is not None


async def repair_via_rpc(rpc: RpcClient, node: tc.NodeHandle) -> dict:
    job = await rpc.call(node.host, node.port, "repair", {}, 5.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = await rpc.call(node.host, node.port, "repair_status", {"id": job["id"]}, 5.0)
        if status["state"] != "running":
            return status
        await asyncio.sleep(0.2)
    raise AssertionError("repair did not finish in 60 s")


async def test_repair_heals_a_replica_that_missed_writes(trio):
    n1, n2, n3 = trio.nodes
    missed = [f"missed-{i}".encode() for i in range(MISSED)]
    only3 = [f"only3-{i}".encode() for i in range(ONLY_N3)]
    async with RpcClient(connect_timeout=2.0) as rpc:
        await put_on(rpc, [n3], only3)
    trio.kill(n3.index)
    async with RpcClient(connect_timeout=2.0) as rpc:
        await put_on(rpc, [n1, n2], missed)
    trio.start_node(n3.index)
    trio.wait_ready(90)
    async with RpcClient(connect_timeout=2.0) as rpc:
        assert not await holds(rpc, n3, missed[0]) and not await holds(rpc, n1, only3[0])

    cmd = [sys.executable, "-m", "ringkv.cli", "repair", "--host", n3.address, "--timeout", "60"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert "repair done: 1/1 ranges, 2 sessions" in out.stdout, out.stdout

    async with RpcClient(connect_timeout=2.0) as rpc:
        first = await rpc.call(n3.host, n3.port, "repair_status", {}, 5.0)
        assert first["keys_received"] == MISSED  # from n1; n2 then agrees with the updated tree
        assert first["keys_sent"] == 2 * ONLY_N3  # to each of n1 and n2
        for node in trio.nodes:
            present = await asyncio.gather(*(holds(rpc, node, k) for k in missed + only3))
            assert all(present), f"{node.node_id} lacks keys after repair"

        second = await repair_via_rpc(rpc, n3)
        assert second["state"] == "done"
        assert second["keys_sent"] == second["keys_received"] == 0
        assert second["rounds"] == 2  # one merkle_open per peer, equal roots

        roots = [await rpc.call(n.host, n.port, "merkle_root", {"start": 0, "end": 0}, 10.0)
                 for n in trio.nodes]
        assert len({r["root"] for r in roots}) == 1 and roots[0]["count"] >= MISSED + ONLY_N3


async def tree_stats(rpc: RpcClient, nodes: list[tc.NodeHandle]) -> list[dict]:
    return [(await rpc.call(n.host, n.port, "status", {}, 5.0))["repair_trees"] for n in nodes]


async def test_a_repair_after_a_small_divergence_rescans_only_the_changed_segments(trio):
    """Kept trees (docs/repair.md): once every node holds a tree of the range, a repair
    after a divergence of a few keys refreshes the trees instead of rebuilding them, and
    rescans only the segments written since, while it still repairs the keys."""
    n1, n2, n3 = trio.nodes
    bulk = [f"bulk-{i}".encode() for i in range(3000)]
    late = [f"late-{i}".encode() for i in range(5)]
    async with RpcClient(connect_timeout=2.0) as rpc:
        await put_on(rpc, [n1, n2, n3], bulk)
        warm = await repair_via_rpc(rpc, n3)  # every node now keeps a tree of the range
        assert warm["state"] == "done" and warm["ranges_total"] == 1
        before = await tree_stats(rpc, trio.nodes)
        await put_on(rpc, [n3], late)  # only n3 has them
        status = await repair_via_rpc(rpc, n3)
        after = await tree_stats(rpc, trio.nodes)
        assert status["state"] == "done" and not status["errors"]
        assert status["tree_refreshes"] == 1 and status["tree_full_builds"] == 0
        # a written segment meets at most 2 leaves (the range need not start on a segment
        # boundary), and holds about 3300 / 2**20 other keys: not the ~3300 keys of the range
        assert 0 < status["leaves_rescanned"] <= 2 * len(late)
        assert status["keys_rescanned"] <= 3 * len(late)
        assert status["keys_sent"] == 2 * len(late) and status["keys_received"] == 0
        for b, a in zip(before, after):
            assert a["full_builds"] == b["full_builds"], (b, a)  # no node scanned the range
        for b, a in zip(before[:2], after[:2]):  # n1 and n2: refreshed, nothing written since
            assert a["refreshes"] == b["refreshes"] + 1 and a["leaves_rescanned"] == b["leaves_rescanned"]
        for node in trio.nodes:
            assert all(await asyncio.gather(*(holds(rpc, node, k) for k in late + bulk[:50])))
        again = await repair_via_rpc(rpc, n3)
        assert again["keys_sent"] == again["keys_received"] == 0 and again["rounds"] == 2
        roots = [await rpc.call(n.host, n.port, "merkle_root", {"start": 0, "end": 0}, 10.0)
                 for n in trio.nodes]
        assert len({r["root"] for r in roots}) == 1


async def test_repair_of_one_token_range(trio):
    n1 = trio.nodes[0]
    cmd = [sys.executable, "-m", "ringkv.cli", "repair", "--host", n1.address,
           "--range", f"0:{2**63}", "--timeout", "60"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert "repair done" in out.stdout
    bad = subprocess.run(cmd[:-4] + ["--range", "nonsense"], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode != 0 and "START:END" in bad.stderr
