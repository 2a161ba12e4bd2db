"""Regression: overlapping range movements left a joining node without data.

Found by the simulator (docs/simulation.md, "Membership changes"): a node that joined at
9.6 s while another started leaving at 12.8 s ended without 4 keys of its new ranges; each
operation had planned its streams against a ring without the other, so ranges the joiner
gained only because the other node left were streamed to nobody, and only anti-entropy
restored them. Fix (docs/topology.md, "One range movement at a time"): join, replace,
decommission and removenode are refused with InvalidRequest naming the member that is
joining or leaving, at the request, and again after the settle step (a move that started
concurrently), as Cassandra refuses concurrent bootstraps by default.
"""

from __future__ import annotations

import asyncio

import pytest

from ringkv import streaming as st
from ringkv.errors import InvalidRequest
from ringkv.membership_record import LEAVING
from ringkv.sim.cluster import PORT, SimCluster
from ringkv.sim.network import SimNetwork, SimRpcClient
from tests.sim.simhelp import run_cluster


def _cluster_with_a_leaving_node(check) -> None:
    """5 nodes, n5 published leaving (a decommission in progress, held there)."""
    async def on_cluster(cluster: SimCluster, net: SimNetwork) -> None:
        n5 = cluster.nodes[4].node
        n5._perform(n5.membership.set_state(LEAVING))
        await asyncio.sleep(3.0)
        await check(cluster, net, SimRpcClient(net, "operator"))

    run_cluster(on_cluster, net_seed=3, cluster_seed=4, identity_seed=5, prefix="ringkv-regress-")


def test_decommission_is_refused_while_another_node_leaves() -> None:
    async def check(cluster: SimCluster, net: SimNetwork, op: SimRpcClient) -> None:
        with pytest.raises(InvalidRequest, match="cannot decommission n4: n5 is leaving"):
            await op.call("n4", PORT, "decommission", {}, 5.0)
        assert cluster.nodes[3].node.membership.state_of("n4") == "normal"
        assert cluster.nodes[3].node.topology.summary() is None  # nothing started

    _cluster_with_a_leaving_node(check)


def test_removenode_is_refused_while_another_node_leaves() -> None:
    async def check(cluster: SimCluster, net: SimNetwork, op: SimRpcClient) -> None:
        cluster.crash(cluster.nodes[2])  # n3 dies
        await asyncio.sleep(10.0)
        assert cluster.nodes[0].node.membership.state_of("n3") == "down"
        with pytest.raises(InvalidRequest, match="cannot removenode n3: n5 is leaving"):
            await op.call("n1", PORT, "removenode", {"node_id": "n3"}, 5.0)

    _cluster_with_a_leaving_node(check)


def test_join_is_refused_while_another_node_leaves() -> None:
    async def check(cluster: SimCluster, net: SimNetwork, op: SimRpcClient) -> None:
        s = cluster._slot("n6", join=True)  # a fresh node with [streaming] join = true
        start = cluster.start(s)
        await asyncio.sleep(5.0)
        # the node's start failed with the refusal (``ringkv server`` prints it, exits 2)
        assert start.done() and isinstance(start.exception(), InvalidRequest)
        assert "cannot join n6: n5 is leaving" in str(start.exception())
        for other in cluster.nodes[:5]:  # it never published anything
            assert other.node.membership.member("n6") is None

    _cluster_with_a_leaving_node(check)


def test_a_move_that_started_concurrently_fails_after_the_settle_step() -> None:
    """Both checks passed before either node published its state: the check after the
    settle step sees the other move; one goes on (joins first, then the lower node id)
    and the other fails before planning, naming it."""
    async def check(cluster: SimCluster, net: SimNetwork, op: SimRpcClient) -> None:
        n5, n3 = cluster.nodes[4].node, cluster.nodes[2].node
        n5._perform(n5.membership.set_state("normal"))  # n5 back to normal
        await asyncio.sleep(3.0)
        await op.call("n4", PORT, "decommission", {}, 5.0)  # accepted: no one moves
        n3._perform(n3.membership.set_state(LEAVING))  # ... and n3 starts leaving at once
        await asyncio.sleep(20.0)
        p = cluster.nodes[3].node.topology.summary()
        assert p["op"] == "decommission" and p["status"] == "failed" and p["tasks"] == 0
        assert "n3 is leaving" in p["error"] and p["error"].startswith("InvalidRequest")

    _cluster_with_a_leaving_node(check)


def test_racing_moves_yield_joins_first_then_lower_ids() -> None:
    assert st.yields_to("decommission", "n4", [("n3", "leaving")]) == [("n3", "leaving")]
    assert st.yields_to("decommission", "n2", [("n3", "leaving")]) == []
    assert st.yields_to("removenode", "n1", [("n9", "joining")]) == [("n9", "joining")]
    assert st.yields_to("join", "n9", [("n1", "leaving")]) == []
    assert st.yields_to("join", "n9", [("n2", "joining")]) == [("n2", "joining")]
    assert st.yields_to("replace", "n1", [("n2", "joining")]) == []


def test_moving_lists_joining_and_leaving_owners() -> None:
    owners = [st.Owner("a", "normal", (1,)), st.Owner("b", "leaving", (2,)),
              st.Owner("c", "joining", (3,)), st.Owner("d", "normal", (4,))]
    assert st.moving(owners) == [("b", "leaving"), ("c", "joining")]
    assert st.moving(owners, ("b",)) == [("c", "joining")]
