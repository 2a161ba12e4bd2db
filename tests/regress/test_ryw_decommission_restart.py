"""Regression: read-your-writes violated in strict mode around a decommission after restarts.

Found by the simulator: ``PYTHONHASHSEED=0 ringkv simulate --seed 400091 --nodes 5
--duration 60s --faults all --mode strict --rate 40 --clients 4``. n5 was decommissioning
(leaving); a power loss restarted the four other nodes, whose membership was in memory
only. n1 had re-learnt n2-n4 but not n5, so its ring was the ring *without* n5: it
coordinated a write to [n2, n3, n1] and acked it. n3 already knew n5 as leaving and read
the same key from [n5, n2, n3], missing the write: the quorums did not intersect because
the two coordinators disagreed on the ring. Fix (docs/decisions.md D17): every node
persists its membership view in ``data_dir/peers.json`` and restores it at start, the
restored peers down until heard of; and a node coordinates nothing before it has merged a
gossip digest since it started.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile

from ringkv import peer_store
from ringkv.errors import Unavailable
from ringkv.membership_record import LEAVING, Member
from ringkv.sim.cluster import PORT, SimCluster
from ringkv.sim.loop import SimLoop
from ringkv.sim.network import SimNetwork, SimRpcClient
from ringkv.sim.trace import Trace
from tests.sim.simhelp import explain, sim

OTHERS = ["n1", "n2", "n3", "n4"]


def _scenario(check, isolate: str = "") -> None:
    """5 nodes; n5 leaving (a decommission in progress); power loss of n1-n4 while n5 is
    cut off from them (and ``isolate`` from everyone); they restart. ``check(cluster,
    net)`` runs right after."""
    loop = SimLoop()
    root = tempfile.mkdtemp(prefix="ringkv-regress-")

    async def main() -> None:
        net = SimNetwork(loop, random.Random(1), Trace())
        cluster = SimCluster(loop, net, root, 5, random.Random(2), hints_mode="strict")
        await cluster.start_all()
        await asyncio.sleep(5.0)
        n5 = cluster.nodes[4].node
        n5._perform(n5.membership.set_state(LEAVING))  # held leaving: no streaming runs
        await asyncio.sleep(3.0)
        for s in cluster.nodes[:4]:
            assert s.node.membership.state_of("n5") == LEAVING
        for s in cluster.nodes[:4]:
            cluster.crash(s)
        net.partition(["n5"], OTHERS)
        if isolate:
            net.partition([isolate], [f"n{i}" for i in range(1, 6) if f"n{i}" != isolate])
        await asyncio.sleep(1.0)
        await asyncio.gather(*(cluster.restart(s) for s in cluster.nodes[:4]))
        await check(cluster, net)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        shutil.rmtree(root, ignore_errors=True)


def test_restarted_nodes_remember_the_leaving_node() -> None:
    """Before the fix the restarted nodes' rings had no n5 at all (the future ring),
    while a node that knew n5 as leaving read from a ring with it."""
    async def check(cluster: SimCluster, net: SimNetwork) -> None:
        for s in cluster.nodes[:4]:  # at once: restored from disk, n5 not heard of
            m = s.node.membership
            assert m.member("n5") is not None and m.member("n5").state == "down"
            assert [x.state for x in m.ring_members() if x.node_id == "n5"] == [LEAVING]
            assert "n5" in s.node.ring and s.node._view.moving
        await asyncio.sleep(3.0)  # gossip among n1-n4; n5 still cut off
        for s in cluster.nodes[:4]:
            node = s.node
            assert node.membership.synced
            assert sorted(m.node_id for m in node.membership.live_members()) == OTHERS
            assert "n5" in node.ring and node._view.moving  # still a read replica, leaving
        ring = cluster.nodes[4].node.ring  # n5's own view: itself leaving
        for i in range(50):
            token = random.Random(i).getrandbits(64)
            assert cluster.nodes[0].node.ring.replicas(token) == ring.replicas(token)

    _scenario(check)


def test_restarted_node_coordinates_nothing_before_it_hears_the_cluster() -> None:
    async def check(cluster: SimCluster, net: SimNetwork) -> None:
        await asyncio.sleep(2.0)  # n1 restarted cut off from everyone
        client = SimRpcClient(net, "client")
        for method, body in (("get", {"key": b"k"}), ("put", {"key": b"k", "value": b"v"})):
            try:
                await client.call("n1", PORT, method, body, 5.0)
            except Unavailable as exc:
                assert "has not heard the cluster" in str(exc)
            else:
                raise AssertionError(f"{method} was coordinated by an isolated restarted node")
        net.heal()
        await asyncio.sleep(3.0)
        assert cluster.nodes[0].node.membership.synced
        await client.call("n1", PORT, "put", {"key": b"k", "value": b"v"}, 5.0)
        reply = await client.call("n3", PORT, "get", {"key": b"k"}, 5.0)
        assert reply["values"] == [b"v"]

    _scenario(check, isolate="n1")


def test_peers_file_round_trip(tmp_path) -> None:
    records = [Member("n2", "h", 1, 2, "dc1", "r1", (5, 2**64 - 1), "leaving", 17, 3),
               Member("n3", state="removed", tokens=(9,), generation=4)]
    peer_store.save(str(tmp_path), records)
    assert peer_store.load(str(tmp_path)) == sorted(records, key=lambda m: m.node_id)
    assert peer_store.load(str(tmp_path / "none")) == []


def test_seed_400091_replays_clean() -> None:
    res = sim(400091, duration=60.0, faults="all", mode="strict", rate=40.0, clients=4)
    assert res.ok, explain(res, "all")


def test_restored_records_shape_the_ring_but_are_not_liveness() -> None:
    """The pure part (ringkv/membership.py): restored peers are down until fresh news."""
    from ringkv.membership import Membership, Send

    me = Member("n1", "h1", 1, tokens=(1,), state="normal", generation=10)
    m = Membership(me, random.Random(1))
    assert m.synced  # no peers, no seeds: nothing to wait for
    n2 = Member("n2", "h2", 2, tokens=(2,), state="normal", generation=5, heartbeat=9)
    n5 = Member("n5", "h5", 5, tokens=(5,), state=LEAVING, generation=5, heartbeat=40)
    gone = Member("n6", "h6", 6, tokens=(6,), state="removed", generation=3)
    m.restore([n2, n5, gone], now=100.0)
    assert m.records() == [n2, n5, gone]
    assert [(x.node_id, x.state) for x in m.ring_members()] == [
        ("n1", "normal"), ("n2", "normal"), ("n5", LEAVING)]
    assert [x.node_id for x in m.live_members()] == ["n1"]
    assert m.state_of("n5") == "down" and m.state_of("n6") == "removed" and not m.synced
    sends = [e for e in m.tick(100.5) if isinstance(e, Send) and e.kind == "gossip"]
    assert {(e.host, e.port) for e in sends} >= {("h2", 2), ("h5", 5)}  # like unknown seeds
    # n2's gossip: its own record (fresh), and n5 last heard of 3 s ago: before our restart
    peer = Membership(Member("n2", "h2", 2, tokens=(2,), state="normal", generation=5,
                             heartbeat=20), random.Random(2))
    peer.add_seed("h1", 1)
    peer.restore([n5], now=0.0)
    peer._peers["n5"].last_seen, peer._peers["n5"].down_since = 97.5, None
    for e in peer.tick(100.5):
        if isinstance(e, Send) and e.kind == "gossip" and e.host == "h1":
            m.on_message("gossip", e.body, 100.6)
            break
    else:
        raise AssertionError("n2 did not gossip to n1")
    assert m.synced and m.alive("n2")
    assert m.state_of("n5") == "down"  # news older than our restart does not revive it
