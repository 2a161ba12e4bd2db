"""Regression: a write that reached a node after it streamed the range away was stranded.

Found by the simulator in variant builds (seed 2144: a hint replayed to the old owner
after a join streamed the range away from it; seed 1025: a replica copy delayed ~2 s by
the network, landing on a decommissioning node after it handed the range off). The node
applied the write and nothing more: the range's new owner had already streamed it from
that node, so the new owner never got the write. The other replicas kept it (no
acknowledged write lost at W >= 2) and anti-entropy repaired it eventually, but the
simulator's "converged by hinted handoff" check could fail on it, and the CI seeds
passed only because no such message happened to be late.

Fix (docs/decisions.md D23, docs/topology.md "Writes that arrive after a range moved"): a
node applying a ``replica_put``, ``replica_put_batch`` or ``hint_put`` for a key whose
future replicas (ring view with the pending owners) do not include it forwards the
version set to the replicas that may lack it (``streaming.RingView.forward_targets``);
a forward that fails becomes a durable hint.

Both scenarios run the production nodes in the simulator, deterministically; the faults
are the network's (a partition, messages held back as a long delay would).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from ringkv import streaming as st
from ringkv import versions
from ringkv.ring import in_range, token_for
from ringkv.sim.cluster import PORT, SimCluster
from ringkv.sim.network import SimNetwork, SimRpcClient
from tests.sim.simhelp import run_cluster

REPLICA_WRITES = ("replica_put", "replica_put_batch")


class HoldingNetwork(SimNetwork):
    """The simulated network, able to hold some messages from one host to another back
    until :meth:`release` (a delay as long as the test needs, then delivery)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.holds: dict[tuple[str, str], tuple[str, ...]] = {}  # (src, dst) -> methods
        self.held: dict[tuple[str, str], list[tuple]] = {}

    def hold(self, src: str, dst: str, methods: tuple[str, ...]) -> None:
        self.holds[(src, dst)] = methods
        self.held.setdefault((src, dst), [])

    def transmit(self, src, dst, deliver, context, args=()):  # type: ignore[override]
        methods = self.holds.get((src, dst))
        if methods and len(args) > 2 and args[2] in methods:
            self.held[(src, dst)].append((src, dst, deliver, context, args))
            return
        super().transmit(src, dst, deliver, context, args)

    def release(self, src: str, dst: str) -> int:
        """Deliver what was held on ``src -> dst`` (after the usual delay); hold no more."""
        self.holds.pop((src, dst), None)
        held = self.held.pop((src, dst), [])
        for msg in held:
            super().transmit(*msg)
        return len(held)


def _run(scenario: Callable[[SimCluster, HoldingNetwork, SimRpcClient], Awaitable[None]]) -> None:
    async def on_cluster(cluster: SimCluster, net: HoldingNetwork) -> None:
        await scenario(cluster, net, SimRpcClient(net, "client"))

    run_cluster(on_cluster, net_seed=3, cluster_seed=4, identity_seed=5, network=HoldingNetwork,
                prefix="ringkv-regress-")


def _skey(key: bytes) -> bytes:
    return token_for(key).to_bytes(8, "big") + key


def _held(s: Any, key: bytes) -> list[bytes]:
    raw = s.node.engine.get(_skey(key))
    return [] if raw is None else sorted(versions.values(versions.decode(raw)))


async def _until(cond: Callable[[], bool], limit_s: float, step_s: float = 0.05,
                 what: str = "condition") -> None:
    for _ in range(int(limit_s / step_s)):
        if cond():
            return
        await asyncio.sleep(step_s)
    raise AssertionError(f"{what} not reached in {limit_s} virtual seconds")


def test_hint_replayed_after_a_join_streamed_the_range_away_reaches_the_new_owner() -> None:
    """n2 is cut off while 150 keys are written: its copies become hints on stand-ins.
    n2 comes back, but its stand-ins cannot reach it until n6 has joined, streaming the
    ranges n2 gives up *from n2* (the giver, alive), which lacks those writes. The hints
    then replay to n2, which no longer replicates those keys: n6 must get them too."""
    async def scenario(cluster: SimCluster, net: HoldingNetwork, client: SimRpcClient) -> None:
        n = {s.name: s for s in cluster.nodes}
        before = n["n1"].node.ring
        others = ["n1", "n3", "n4", "n5"]
        net.partition(["n2"], others)
        await _until(lambda: not n["n1"].node.alive("n2"), 30.0)
        keys = [b"k%03d" % i for i in range(150)]
        for key in keys:
            await client.call("n1", PORT, "put", {"key": key, "value": b"v-" + key}, 5.0)
        stand_ins = [s for s in others if n[s].node.handoff.store.pending().get("n2")]
        assert stand_ins, "the writes left no hint for n2"
        net.heal()
        net.partition(["n2"], stand_ins)  # the hints wait; everything else flows
        await asyncio.sleep(5.0)
        n6 = cluster.join()
        await _until(lambda: (n6.node is not None and n6.node.topology.summary() or {})
                     .get("status") == "done", 120.0, 0.5)
        await _until(lambda: all("n6" in n[s].node.ring for s in ["n1", "n2"] + others), 30.0)
        after = n["n1"].node.ring
        n["n6"] = n6
        moved = [k for k in keys if "n2" in before.replicas(token_for(k))
                 and "n2" not in after.replicas(token_for(k))
                 and "n6" in after.replicas(token_for(k))]
        assert moved, "no written key moved from n2 to n6: the scenario tests nothing"
        assert any(_held(n["n6"], k) == [] for k in moved), "n6 streamed them anyway"
        net.heal()  # the stand-ins replay their hints to n2 now
        await _until(lambda: not any(n[s].node.handoff.store.pending().get("n2")
                                     for s in stand_ins), 30.0, 0.5)
        await asyncio.sleep(3.0)
        missing = [k.decode() for k in moved if _held(n["n6"], k) != [b"v-" + k]]
        assert not missing, f"n6 never got {len(missing)} of {len(moved)} moved keys: {missing[:5]}"
        for key in keys:  # every home replica of every key converged by hinted handoff
            held = {r: _held(n[r], key) for r in after.replicas(token_for(key))}
            assert all(v == [b"v-" + key] for v in held.values()), (key, held)
        assert n["n2"].node.counters["forwarded_after_move"] >= len(moved)

    _run(scenario)


def test_replica_copy_delayed_past_a_decommission_stream_reaches_the_new_owner() -> None:
    """A QUORUM write's copy for n5 is held back in the network; n5 is decommissioned and
    streams the key's range to its new owner first. The stream of a later range is held
    too, so n5 is still ``leaving`` when the copy lands (a single ``replica_put``, plus
    the coordinator's hint replays): the new owner, a pending replica, must get it. Once
    n5 is done and ``removed``, a ``replica_put_batch`` landing late is checked the same
    way: every replica of those keys must get it."""
    async def scenario(cluster: SimCluster, net: HoldingNetwork, client: SimRpcClient) -> None:
        n = {s.name: s for s in cluster.nodes}
        n5 = n["n5"].node
        plan = st.leave_plan(n5._view, "n5")
        first = plan[0]  # the first range n5 hands off, and a later one to another node
        second = next(t for t in plan if t.target != first.target)
        later = second.target
        keys = [k for k in (b"d%04d" % i for i in range(4000))
                if in_range(token_for(k), first.start, first.end)][:3]
        filler = next(k for k in (b"f%04d" % i for i in range(4000))
                      if in_range(token_for(k), second.start, second.end))
        assert len(keys) == 3
        key, batch_keys = keys[0], keys[1:]
        coord = next(r for r in n5.ring.replicas(token_for(key)) if r != "n5")
        await client.call("n1", PORT, "put", {"key": filler, "value": b"f", "w": "ALL"}, 5.0)
        net.hold(coord, "n5", REPLICA_WRITES)
        net.hold("n5", later, ("stream_apply",))
        await client.call(coord, PORT, "put", {"key": key, "value": b"late", "w": "QUORUM"}, 5.0)
        await client.call("n5", PORT, "decommission", {}, 5.0)
        await _until(lambda: 0 in n5.topology.progress.done and net.held[("n5", later)], 60.0)
        assert _held(n[first.target], key) == [], "the stream carried the write anyway"
        assert n5.membership.state_of("n5") == "leaving"
        assert net.release(coord, "n5") >= 1  # the delayed copy lands on n5 now
        await asyncio.sleep(3.0)
        assert _held(n[first.target], key) == [b"late"]
        assert n5.counters["forwarded_after_move"] >= 1

        net.release("n5", later)
        await _until(lambda: n5.topology.summary()["status"] == "done", 120.0, 0.5)
        late = [versions.encode(versions.update(versions.EMPTY, {}, "x9", b"batch-" + k, 1.0))
                for k in batch_keys]
        await client.call("n5", PORT, "replica_put_batch",
                          {"items": [[_skey(k), vs] for k, vs in zip(batch_keys, late)]}, 5.0)
        await asyncio.sleep(3.0)
        ring = n["n1"].node.ring
        assert "n5" not in ring
        for k in batch_keys:
            for r in ring.replicas(token_for(k)):
                assert _held(n[r], k) == [b"batch-" + k], (k, r)

    _run(scenario)


def test_hint_for_a_node_that_was_decommissioned_goes_to_the_new_owners() -> None:
    """n5 is cut off while a key of a range it will hand off is written: a stand-in keeps
    the hint. n5 comes back, but the stand-in's replays to it never get through, and n5
    is decommissioned (streaming that range without the write) and removed. The hint's
    target will never take it: it must go to the key's current replicas instead."""
    async def scenario(cluster: SimCluster, net: HoldingNetwork, client: SimRpcClient) -> None:
        n = {s.name: s for s in cluster.nodes}
        n5 = n["n5"].node
        first = st.leave_plan(n5._view, "n5")[0]
        key = next(k for k in (b"h%04d" % i for i in range(4000))
                   if in_range(token_for(k), first.start, first.end))
        coord = next(r for r in n5.ring.replicas(token_for(key)) if r != "n5")
        others = [x for x in n if x != "n5"]
        net.partition(["n5"], others)
        await _until(lambda: not n[coord].node.alive("n5"), 30.0)
        await client.call(coord, PORT, "put", {"key": key, "value": b"hinted"}, 5.0)
        stand_ins = [x for x in others if n[x].node.handoff.store.pending().get("n5")]
        assert stand_ins, "the write left no hint for n5"
        net.heal()
        for x in stand_ins:  # their replays to n5 never arrive (a link that drops them)
            net.hold(x, "n5", REPLICA_WRITES)
        await _until(lambda: n[coord].node.alive("n5"), 30.0)
        await client.call("n5", PORT, "decommission", {}, 5.0)
        await _until(lambda: n5.topology.summary()["status"] == "done", 120.0, 0.5)
        await _until(lambda: all("n5" not in n[x].node.ring for x in others), 30.0)
        assert _held(n[first.target], key) == [], "the stream carried the write anyway"
        await _until(lambda: not any(n[x].node.handoff.store.pending().get("n5")
                                     for x in stand_ins), 30.0, 0.5,
                     "the hints for the removed n5 delivered")
        await asyncio.sleep(2.0)
        ring = n["n1"].node.ring
        for r in ring.replicas(token_for(key)):
            assert _held(n[r], key) == [b"hinted"], r
        assert sum(n[x].node.counters["hints_redirected"] for x in stand_ins) >= 1

    _run(scenario)
