"""Membership properties (hypothesis): merging is a join, and the failure detector is
accurate under loss (no live node declared down) and complete (a stopped node is).

Clusters run on ringkv.testing.sim_router in virtual time; each example is one seed.
A failing example prints its (seed, n, loss, ...) so it can be replayed exactly.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringkv.membership import (DOWN, JOINING, LEAVING, NORMAL, REMOVED, Member, Membership,
                               MembershipConfig, StateChanged)
from ringkv.membership_record import encode_entry
from ringkv.testing.sim_router import membership_cluster

CFG = MembershipConfig()
SIM = settings(max_examples=25, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow])

records = st.builds(
    lambda node, gen, hb, state, port: Member(node, port=port, state=state, generation=gen,
                                              heartbeat=hb),
    st.sampled_from(["x", "y", "z"]), st.integers(1, 3), st.integers(0, 6),
    st.sampled_from([JOINING, NORMAL, LEAVING, REMOVED]), st.integers(1, 4))


def merged(entries: list[Member]) -> dict[str, Member]:
    """Feed entries one gossip message each into a fresh node; return its records."""
    node = Membership(Member("self", port=99), random.Random(0))
    for e in entries:
        body = {"from": encode_entry(Member("relay", port=98), 0.0, False),
                "members": [encode_entry(e, 0.0, False)]}
        node.on_message("gossip", body, 1000.0)
    return {m.node_id: m for m in node.members() if m.node_id in "xyz"}


@given(st.lists(records, max_size=12), st.randoms(use_true_random=False))
def test_merge_is_a_join(entries, rnd):
    """Order and duplication do not matter; the result is the max version per node."""
    shuffled = entries + entries[: len(entries) // 2]
    rnd.shuffle(shuffled)
    a, b = merged(entries), merged(shuffled)
    assert a == b
    for node_id, member in a.items():
        assert member.version() == max(e.version() for e in entries if e.node_id == node_id)


def false_downs(router, since: float, live: list[str]) -> list:
    return [(t, e) for t, e in router.events
            if t >= since and isinstance(e, StateChanged) and e.new == DOWN and e.node_id in live]


@SIM
@given(seed=st.integers(0, 10_000), n=st.integers(3, 9), loss=st.floats(0.0, 0.29))
def test_no_false_downs_under_loss_and_stopped_node_is_detected(seed, n, loss):
    router, nodes = membership_cluster(n, seed=seed, loss=loss)
    # Accuracy: two simulated minutes of lossy gossip, nobody declared down.
    router.run_for(120)
    assert all(len(m.live_members()) == n for m in nodes.values())
    assert false_downs(router, 0.0, list(nodes)) == []
    # Completeness: stop one node; every other node declares it down, and only it.
    victim = f"n{seed % n:02d}"
    router.stop(victim)
    stopped_at = router.now
    live = [i for i in sorted(nodes) if i != victim]
    assert router.run_for(30, lambda: all(nodes[i].state_of(victim) == DOWN for i in live))
    assert router.now - stopped_at <= CFG.suspect_after_s + 10
    # ... and it stays down: late relays of its last heartbeats do not revive it.
    router.run_for(30)
    assert all(nodes[i].state_of(victim) == DOWN for i in live)
    assert false_downs(router, stopped_at, live) == []
    assert all(nodes[i].counters["revived"] == 0 for i in live)


@SIM
@given(seed=st.integers(0, 10_000), n=st.integers(4, 8), loss=st.floats(0.0, 0.2))
def test_one_bad_link_never_marks_its_ends_down(seed, n, loss):
    router, nodes = membership_cluster(n, seed=seed, loss=loss, seeds=2)
    a, b = f"n{1 + seed % (n - 1):02d}", f"n{(2 + seed) % (n - 1) + 1:02d}"
    if a == b:
        b = "n00"
    router.block(a, b)
    router.run_for(150)
    assert false_downs(router, 0.0, list(nodes)) == []
    assert nodes[a].alive(b) and nodes[b].alive(a)


@SIM
@given(seed=st.integers(0, 10_000), n=st.integers(3, 7), loss=st.floats(0.0, 0.25))
def test_partitioned_node_comes_back_after_heal(seed, n, loss):
    router, nodes = membership_cluster(n, seed=seed, loss=loss)
    router.run_for(20)
    victim = f"n{seed % n:02d}"
    others = [i for i in sorted(nodes) if i != victim]
    router.partition([victim], others)
    assert router.run_for(40, lambda: all(nodes[i].state_of(victim) == DOWN for i in others))
    router.heal()
    assert router.run_for(40, lambda: all(len(m.live_members()) == n for m in nodes.values()))
