"""Hypothesis properties of ringkv.ring, checked against a slow, obviously-correct model.

The model is the older Cassandra NetworkTopologyStrategy: walk the ring; per dc take nodes
from racks not yet used and set the others aside; once every rack of the dc has a replica,
fill the remaining places from the set-aside nodes in ring order, then from the walk.
ringkv's one-pass rule must agree with it everywhere.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.ring import TOKEN_SPACE, NodeInfo, Ring, in_range, moved_ranges

TOKENS = st.integers(0, TOKEN_SPACE - 1)


@st.composite
def clusters(draw, max_nodes: int = 8):
    """(nodes, replication): small clusters over 1-2 dcs and 1-3 racks, tiny token counts."""
    count = draw(st.integers(1, max_nodes))
    nodes = []
    for i in range(count):
        tokens = draw(st.lists(TOKENS, min_size=0, max_size=5, unique=True))
        dc = draw(st.sampled_from(["dc1", "dc2"]))
        rack = draw(st.sampled_from(["r1", "r2", "r3"]))
        nodes.append(NodeInfo(f"n{i}", tuple(sorted(tokens)), dc=dc, rack=rack))
    replication = draw(st.dictionaries(st.sampled_from(["dc1", "dc2", "dc3"]),
                                       st.integers(0, 4), min_size=1))
    return nodes, replication


def model_walk(nodes: list[NodeInfo], token: int) -> list[str]:
    pairs = sorted({(t, n.node_id) for n in nodes for t in n.tokens})
    owner: dict[int, str] = {}
    for t, node_id in pairs:
        owner.setdefault(t, node_id)  # smallest id keeps a contested token
    tokens = sorted(owner)
    if not tokens:
        return []
    start = next((i for i, t in enumerate(tokens) if t >= token), 0)
    order: list[str] = []
    for k in range(len(tokens)):
        node_id = owner[tokens[(start + k) % len(tokens)]]
        if node_id not in order:
            order.append(node_id)
    return order


def model_replicas(nodes: list[NodeInfo], replication: dict[str, int], token: int) -> list[str]:
    by_id = {n.node_id: n for n in nodes}
    walk = model_walk(nodes, token)
    chosen: set[str] = set()
    for dc, rf in replication.items():
        members = [n for n in walk if by_id[n].dc == dc]
        all_racks = {by_id[n].rack for n in members}
        picked: list[str] = []
        skipped: list[str] = []
        used: set[str] = set()
        for n in members:
            if len(picked) == rf:
                break
            if used == all_racks:  # every rack has a replica: fill from the set-aside first
                while skipped and len(picked) < rf:
                    picked.append(skipped.pop(0))
                if len(picked) == rf:
                    break
                picked.append(n)
            elif by_id[n].rack in used:
                skipped.append(n)
            else:
                used.add(by_id[n].rack)
                picked.append(n)
        while skipped and len(picked) < rf:
            picked.append(skipped.pop(0))
        chosen.update(picked)
    return [n for n in walk if n in chosen]


@settings(max_examples=200, deadline=None)
@given(clusters(), st.lists(TOKENS, min_size=1, max_size=10))
def test_replicas_match_the_model(cluster, probes):
    nodes, replication = cluster
    ring = Ring(nodes, replication)
    for token in probes:
        assert ring.replicas(token) == model_replicas(nodes, replication, token)
        assert ring.walk(token) == model_walk(nodes, token)


@settings(max_examples=200, deadline=None)
@given(clusters(), st.lists(TOKENS, min_size=1, max_size=10))
def test_replicas_are_distinct_and_as_many_as_possible(cluster, probes):
    nodes, replication = cluster
    ring = Ring(nodes, replication)
    owners = set(model_walk(nodes, 0))  # nodes left with a token after contested ones
    on_ring = [n for n in nodes if n.node_id in owners]
    want = sum(min(rf, sum(n.dc == dc for n in on_ring)) for dc, rf in replication.items())
    for token in probes:
        reps = ring.replicas(token)
        assert len(reps) == len(set(reps)) == want
        assert sorted(ring.walk(token)) == sorted(n.node_id for n in on_ring)


@settings(max_examples=100, deadline=None)
@given(clusters(), st.randoms(use_true_random=False), st.lists(TOKENS, min_size=1, max_size=10))
def test_placement_is_deterministic_and_independent_of_node_order(cluster, rnd, probes):
    nodes, replication = cluster
    shuffled = list(nodes)
    rnd.shuffle(shuffled)
    a, b = Ring(nodes, replication), Ring(shuffled, dict(reversed(list(replication.items()))))
    for token in probes:
        assert a.replicas(token) == b.replicas(token) == Ring(nodes, replication).replicas(token)
    assert a.ownership() == b.ownership()


@settings(max_examples=100, deadline=None)
@given(clusters(), st.lists(TOKENS, min_size=1, max_size=10))
def test_ranges_of_agree_with_replicas(cluster, probes):
    nodes, replication = cluster
    ring = Ring(nodes, replication)
    for token in probes:
        reps = set(ring.replicas(token))
        for n in nodes:
            mine = any(in_range(token, s, e) for s, e in ring.ranges_of(n.node_id))
            assert mine == (n.node_id in reps)


@settings(max_examples=100, deadline=None)
@given(clusters(), clusters(), st.lists(TOKENS, min_size=1, max_size=10))
def test_moved_ranges_agree_with_replicas(before, after, probes):
    old, new = Ring(*before), Ring(*after)
    moves = moved_ranges(old, new)
    for token in probes:
        hit = [m for m in moves if in_range(token, m.start, m.end)]
        assert len(hit) == int(set(old.replicas(token)) != set(new.replicas(token)))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(1, 16), st.integers(0, 2**32))
def test_joining_node_only_takes_over(n, vnodes, seed):
    rng = random.Random(seed)
    nodes = [NodeInfo(f"n{i}", tuple(rng.getrandbits(64) for _ in range(vnodes))) for i in range(n)]
    old = Ring(nodes, {"dc1": 3})
    new = old.with_node(NodeInfo("new", tuple(rng.getrandbits(64) for _ in range(vnodes))))
    for m in moved_ranges(old, new):
        assert m.gained == ("new",)
        assert len(m.lost) == (1 if n >= 3 else 0)
