"""Unit tests of ringkv.ring: tokens, placement, ranges, ownership and membership moves."""

from __future__ import annotations

import random

import pytest
import xxhash

from ringkv.ring import (MAX_TOKEN, TOKEN_SPACE, NodeInfo, Ring, generate_tokens, in_range,
                         moved_ranges, range_width, scan_bounds, storage_key, token_for,
                         token_of, user_key)


def cluster(n: int, tokens: int, seed: int = 1, racks: int = 1, dc: str = "dc1",
            prefix: str = "n") -> list[NodeInfo]:
    rng = random.Random(seed)
    return [NodeInfo(f"{prefix}{i}", generate_tokens(rng, tokens), dc=dc, rack=f"r{i % racks}")
            for i in range(n)]


def keys(count: int) -> list[bytes]:
    return [b"key-%d" % i for i in range(count)]


# -- tokens and storage keys -------------------------------------------------------------


def test_token_is_unsigned_xxh3_64():
    assert token_for(b"hello") == xxhash.xxh3_64_intdigest(b"hello")
    assert all(0 <= token_for(k) <= MAX_TOKEN for k in keys(100))


def test_storage_key_round_trip_and_token_order():
    skeys = [storage_key(k) for k in keys(200)]
    assert [user_key(s) for s in skeys] == keys(200)
    assert [token_of(s) for s in skeys] == [token_for(k) for k in keys(200)]
    # byte order of storage keys is token order: a token range is one contiguous scan
    assert sorted(skeys) == sorted(skeys, key=lambda s: (token_of(s), user_key(s)))


def test_generate_tokens_is_seeded_distinct_sorted():
    a = generate_tokens(random.Random(7), 256)
    assert a == generate_tokens(random.Random(7), 256)
    assert a != generate_tokens(random.Random(8), 256)
    assert len(set(a)) == 256 and list(a) == sorted(a)
    assert generate_tokens(random.Random(7), 0) == ()


# -- placement ---------------------------------------------------------------------------


def test_single_token_nodes_first_n_clockwise():
    nodes = [NodeInfo(f"n{i}", (i * 100,)) for i in range(1, 6)]  # tokens 100..500
    ring = Ring(nodes, {"dc1": 3})
    assert ring.replicas(150) == ["n2", "n3", "n4"]
    assert ring.replicas(200) == ["n2", "n3", "n4"]  # a range is (prev, token]
    assert ring.replicas(201) == ["n3", "n4", "n5"]
    assert ring.replicas(450) == ["n5", "n1", "n2"]  # wraps
    assert ring.replicas(MAX_TOKEN) == ["n1", "n2", "n3"]
    assert ring.replicas(0) == ["n1", "n2", "n3"]


def test_vnodes_give_first_n_distinct_physical_nodes():
    ring = Ring(cluster(5, 16), {"dc1": 3})
    pairs = sorted((t, n.node_id) for n in ring.nodes for t in n.tokens)
    for k in keys(300):
        tok = token_for(k)
        start = next((i for i, (t, _) in enumerate(pairs) if t >= tok), 0)
        expected: list[str] = []
        for j in range(len(pairs)):
            owner = pairs[(start + j) % len(pairs)][1]
            if owner not in expected:
                expected.append(owner)
        assert ring.replicas(tok) == expected[:3]
        assert ring.walk(tok) == expected


def test_racks_are_spread_when_there_are_enough():
    nodes = [NodeInfo(f"n{i}", (i * 10,), rack=r) for i, r in enumerate("aabbcc", 1)]
    ring = Ring(nodes, {"dc1": 3})
    # walk from 10: n1(a) n2(a, skipped) n3(b) n4(b, skipped) n5(c)
    assert ring.replicas(5) == ["n1", "n3", "n5"]
    for tok in range(0, 70, 3):
        racks = {ring.node(n).rack for n in ring.replicas(tok)}
        assert racks == {"a", "b", "c"}


def test_fewer_racks_than_rf_fills_with_the_first_repeats():
    nodes = [NodeInfo(f"n{i}", (i * 10,), rack=r) for i, r in enumerate("aaab", 1)]
    ring = Ring(nodes, {"dc1": 3})
    # walk from 10: n1(a) n2(a: the one allowed repeat) n3(a: refused) n4(b)
    assert ring.replicas(5) == ["n1", "n2", "n4"]
    assert ring.replicas(35) == ["n4", "n1", "n2"]


def test_per_dc_replication_factor():
    nodes = cluster(5, 8, seed=1, dc="dc1", prefix="a") + cluster(4, 8, seed=2, dc="dc2", prefix="b")
    ring = Ring(nodes, {"dc1": 3, "dc2": 2})
    for k in keys(200):
        tok = token_for(k)
        reps = ring.replicas(tok)
        assert len(reps) == 5 == len(set(reps))
        assert sum(ring.node(n).dc == "dc1" for n in reps) == 3
        walk = ring.walk(tok)
        assert reps == sorted(reps, key=walk.index)  # ring-walk order
        for dc, rf in (("dc1", 3), ("dc2", 2)):
            assert [n for n in reps if ring.node(n).dc == dc] == [n for n in walk if ring.node(n).dc == dc][:rf]


def test_dc_with_fewer_nodes_than_rf_takes_all():
    nodes = cluster(2, 4, dc="dc1", prefix="a") + cluster(1, 4, seed=3, dc="dc2", prefix="b")
    ring = Ring(nodes, {"dc1": 3, "dc2": 3})
    assert sorted(ring.replicas(12345)) == ["a0", "a1", "b0"]


def test_unreplicated_dc_holds_nothing_but_is_walked():
    nodes = cluster(3, 4, dc="dc1", prefix="a") + cluster(2, 4, seed=3, dc="dc9", prefix="z")
    ring = Ring(nodes, {"dc1": 2})
    for k in keys(50):
        assert all(n.startswith("a") for n in ring.replicas(token_for(k)))
        assert len(ring.walk(token_for(k))) == 5
    assert ring.ownership()["z0"] == 0.0


def test_empty_ring_and_tokenless_node():
    assert Ring([], {"dc1": 3}).replicas(5) == []
    assert Ring([], {"dc1": 3}).walk(5) == []
    ring = Ring([NodeInfo("a", (10,)), NodeInfo("joining", ())], {"dc1": 3})
    assert ring.replicas(5) == ["a"] and ring.walk(5) == ["a"]
    assert "joining" in ring and ring.ranges_of("joining") == []


def test_contested_token_goes_to_smaller_id_and_order_does_not_matter():
    a, b = NodeInfo("b", (10, 20)), NodeInfo("a", (10, 30))
    r1, r2 = Ring([a, b], {"dc1": 1}), Ring([b, a], {"dc1": 1})
    assert r1.replicas(5) == r2.replicas(5) == ["a"]
    assert r1.tokens == r2.tokens == (10, 20, 30)


def test_node_info_tokens_from_a_list_become_a_tuple():
    info = NodeInfo("a", [3, 1])  # type: ignore[arg-type]  # as decoded from msgpack
    assert info.tokens == (3, 1) and hash(info)


def test_invalid_rings_are_refused():
    with pytest.raises(ValueError):
        Ring([NodeInfo("a", (1,)), NodeInfo("a", (2,))], {"dc1": 1})
    with pytest.raises(ValueError):
        Ring([NodeInfo("a", (TOKEN_SPACE,))], {"dc1": 1})
    with pytest.raises(ValueError):
        Ring([NodeInfo("a", (1,))], {"dc1": -1})


def test_replicas_result_is_a_fresh_list():
    ring = Ring(cluster(4, 4), {"dc1": 3})
    ring.replicas(99).clear()
    assert len(ring.replicas(99)) == 3


# -- ranges and ownership ----------------------------------------------------------------


def test_range_helpers_wrap_through_zero():
    assert range_width(10, 20) == 10
    assert range_width(MAX_TOKEN - 4, 5) == 10  # MAX-3..MAX and 0..5
    assert range_width(7, 7) == TOKEN_SPACE
    assert in_range(20, 10, 20) and not in_range(10, 10, 20)
    assert in_range(0, MAX_TOKEN - 1, 3) and in_range(MAX_TOKEN, MAX_TOKEN - 1, 3)
    assert not in_range(4, MAX_TOKEN - 1, 3)
    assert all(in_range(t, 7, 7) for t in (0, 7, MAX_TOKEN))


@pytest.mark.parametrize("start,end", [(10, 20), (MAX_TOKEN - 5, 5), (7, 7), (MAX_TOKEN, 3),
                                       (3, MAX_TOKEN), (MAX_TOKEN, MAX_TOKEN)])
def test_scan_bounds_cover_exactly_the_range(start, end):
    bounds = scan_bounds(start, end)
    probes = {0, 1, 3, 4, 5, 6, 7, 8, 10, 11, 20, 21, MAX_TOKEN - 6, MAX_TOKEN - 5,
              MAX_TOKEN - 4, MAX_TOKEN - 1, MAX_TOKEN}
    for tok in probes:
        skey = tok.to_bytes(8, "big") + b"some-key"
        inside = any(lo <= skey and (hi is None or skey < hi) for lo, hi in bounds)
        assert inside == in_range(tok, start, end), tok


def test_ranges_of_matches_replicas_and_ownership():
    ring = Ring(cluster(6, 8, racks=2), {"dc1": 3})
    own = ring.ownership()
    assert sum(own.values()) == pytest.approx(3.0)
    for node in ring.nodes:
        ranges = ring.ranges_of(node.node_id)
        assert sum(range_width(s, e) for s, e in ranges) / TOKEN_SPACE == pytest.approx(own[node.node_id])
    for k in keys(500):
        tok = token_for(k)
        for node in ring.nodes:
            mine = any(in_range(tok, s, e) for s, e in ring.ranges_of(node.node_id))
            assert mine == (node.node_id in ring.replicas(tok))


def test_node_replicating_everything_has_one_full_range():
    ring = Ring(cluster(3, 4), {"dc1": 3})
    (start, end), = ring.ranges_of("n0")
    assert start == end and range_width(start, end) == TOKEN_SPACE


def test_primary_ownership_sums_to_one():
    ring = Ring(cluster(5, 32), {"dc1": 3})
    assert sum(ring.primary_ownership().values()) == pytest.approx(1.0)


# -- membership changes ------------------------------------------------------------------


def _add_sixth(rf: int) -> tuple[Ring, Ring]:
    old = Ring(cluster(5, 64, seed=11), {"dc1": rf})
    new = old.with_node(NodeInfo("new", generate_tokens(random.Random(99), 64), rack="r0"))
    return old, new


def test_adding_a_node_moves_one_in_n_plus_one_of_keys_all_to_it():
    old, new = _add_sixth(rf=1)
    ks = keys(20000)
    moved = [k for k in ks if old.replicas(token_for(k)) != new.replicas(token_for(k))]
    assert all(new.replicas(token_for(k)) == ["new"] for k in moved)
    assert abs(len(moved) / len(ks) - 1 / 6) < 0.04  # 64 random tokens: ~1/6 within a few %


def test_adding_a_node_with_rf3_only_swaps_in_the_new_node():
    old, new = _add_sixth(rf=3)
    ks = keys(20000)
    copies_moved = 0
    for k in ks:
        before, after = set(old.replicas(token_for(k))), set(new.replicas(token_for(k)))
        if before != after:
            assert after - before == {"new"} and len(before - after) == 1
            copies_moved += 1
    # replica copies that move: about 1/(n+1) of all copies
    assert abs(copies_moved / (3 * len(ks)) - 1 / 6) < 0.04


def test_first_node_of_a_new_rack_replicates_everything():
    # Rack spreading has a price operators must know: a lone node in a new rack becomes a
    # replica of every key (as in Cassandra). Add racks with several nodes at once.
    old = Ring(cluster(5, 16, seed=11), {"dc1": 3})
    new = old.with_node(NodeInfo("new", generate_tokens(random.Random(99), 16), rack="other"))
    assert new.ownership()["new"] == pytest.approx(1.0)


def test_removing_a_node_moves_only_its_keys():
    old = Ring(cluster(6, 64, seed=5), {"dc1": 3})
    new = old.without_node("n2")
    for k in keys(5000):
        before, after = set(old.replicas(token_for(k))), set(new.replicas(token_for(k)))
        if "n2" not in before:
            assert before == after
        else:
            assert len(after - before) == 1 and before - after == {"n2"}


def test_moved_ranges_describe_exactly_the_changed_keys():
    old, new = _add_sixth(rf=3)
    moves = moved_ranges(old, new)
    assert moves and all(m.gained == ("new",) and len(m.lost) == 1 for m in moves)
    for k in keys(3000):
        tok = token_for(k)
        hit = [m for m in moves if in_range(tok, m.start, m.end)]
        changed = set(old.replicas(tok)) != set(new.replicas(tok))
        assert len(hit) == int(changed)
        if hit:
            assert hit[0].new == tuple(new.replicas(tok)) and hit[0].old == tuple(old.replicas(tok))
    moved_share = sum(range_width(m.start, m.end) for m in moves) / TOKEN_SPACE
    assert moved_share == pytest.approx(new.ownership()["new"])


def test_moved_ranges_of_identical_rings_is_empty():
    ring = Ring(cluster(4, 8), {"dc1": 3})
    assert moved_ranges(ring, Ring(ring.nodes, {"dc1": 3})) == []
