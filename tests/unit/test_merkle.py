"""Merkle trees (ringkv.merkle) and the anti-entropy session (ringkv.antientropy), pure.

Two replicas are plain dicts ``skey -> vs``; a fake peer answers the session's calls from
its dict the way ``ringkv.repair.Responder`` does from an engine. No sockets, no sleeps.
"""

from __future__ import annotations

import random

import pytest

from ringkv import antientropy as ae
from ringkv import merkle, versions
from ringkv.ring import MAX_TOKEN, in_range, storage_key, token_of


def vs_of(value: bytes, node: str = "a", counter: int = 1) -> bytes:
    return versions.encode(versions.update(versions.EMPTY, {}, node, value, 1.0 + counter))


def data(n: int, prefix: str = "k") -> dict[bytes, bytes]:
    return {storage_key(f"{prefix}{i}".encode()): vs_of(f"v{i}".encode()) for i in range(n)}


def in_tree_range(skey: bytes, start: int, end: int) -> bool:
    return in_range(token_of(skey), start, end)


def tree_of(d: dict, start: int = 0, end: int = 0, depth: int = 10) -> merkle.MerkleTree:
    return merkle.build(start, end, ((k, v) for k, v in d.items() if in_tree_range(k, start, end)),
                        depth)


class FakePeer:
    """Answers a session from a dict, like repair.Responder does from an engine."""

    def __init__(self, store: dict[bytes, bytes]) -> None:
        self.store, self.trees, self.calls = store, {}, []

    def scan(self, ranges):
        return sorted((k, v) for k, v in self.store.items()
                      if any(in_tree_range(k, s, e) for s, e in ranges))

    def call(self, method: str, body: dict) -> dict:
        self.calls.append(method)
        if method == "merkle_open":
            tree = tree_of(self.store, body["start"], body["end"], body["depth"])
            self.trees[1] = tree
            return {"sid": 1, "count": tree.count, "root": tree.root()}
        if method == "merkle_level":
            tree = self.trees[body["sid"]]
            nodes = merkle.unpack_indices(body["nodes"])
            return {"hashes": merkle.pack_hashes(tree.children(body["level"], nodes, body["step"]))}
        if method == "merkle_keys":
            buckets = merkle.unpack_indices(body["buckets"])
            items = self.scan(merkle.bucket_ranges(body["start"], body["end"], body["depth"], buckets))
            return {"keys": [k for k, _ in items],
                    "hashes": merkle.pack_hashes([merkle.entry_hash(k, v) for k, v in items])}
        if method == "repair_get":
            return {"vs": [self.store.get(k) for k in body["skeys"][:3]]}  # a prefix: exercises re-asking
        if method == "repair_put":
            for k, v in body["items"]:
                self.store[k] = join(self.store.get(k), v)
            return {"applied": len(body["items"])}
        if method == "merkle_close":
            assert self.trees.pop(body["sid"])
            return {}
        raise AssertionError(method)


def join(a: bytes | None, b: bytes) -> bytes:
    return b if a is None else versions.merge_bytes(a, b)


def run_session(local: dict, peer: FakePeer, start: int = 0, end: int = 0, depth: int = 12,
                params: ae.Params = ae.Params()) -> ae.Stats:
    tree = tree_of(local, start, end, depth)
    session = ae.Session(tree, params)
    effect = session.start()
    for _ in range(100_000):
        if isinstance(effect, ae.Done):
            assert tree.root() == tree_of(local, start, end, depth).root()  # kept incrementally
            return effect.stats
        if isinstance(effect, ae.Call):
            effect = session.feed(peer.call(effect.method, effect.body))
        elif isinstance(effect, ae.Scan):
            effect = session.feed(FakePeer(local).scan(effect.ranges))
        else:
            for k, v in effect.items:
                local[k] = join(local.get(k), v)
            effect = session.feed(None)
    raise AssertionError("session did not end")


# -- trees --------------------------------------------------------------------------------------


def test_equal_data_equal_trees_in_any_order():
    d = data(500)
    items = list(d.items())
    random.Random(1).shuffle(items)
    a, b = tree_of(d), merkle.build(0, 0, items, 10)
    assert a.root() == b.root() != 0 and a.leaves == b.leaves and a.count == 500


def test_empty_tree_root_is_zero():
    assert merkle.MerkleTree(5, 10).root() == 0


def test_diff_finds_the_bucket_of_a_changed_key():
    d = data(300)
    other = dict(d)
    k = sorted(d)[17]
    other[k] = vs_of(b"changed", "b")
    a, b = tree_of(d), tree_of(other)
    assert merkle.diff(a, b) == [a.bucket(token_of(k))]
    assert merkle.diff(a, a) == []


def test_levels_fold_and_children_are_dense():
    t = tree_of(data(200), depth=6)
    for d in range(6):
        assert sum(t.level(d).values()) % (1 << 64) == sum(t.leaves.values()) % (1 << 64)
    assert t.root() == t.level(0).get(0, 0) != 0
    kids = t.children(0, [0], 2)
    assert kids == [t.node(2, i) for i in range(4)]


def test_incremental_update_equals_rebuild():
    d = data(100)
    t = tree_of(d, depth=8)
    t.level(3)  # a cached level must follow updates too
    k = sorted(d)[3]
    new = vs_of(b"x", "b")
    t.replace(token_of(k), merkle.entry_hash(k, d[k]), merkle.entry_hash(k, new))
    d[k] = new
    gone = sorted(d)[4]
    t.replace(token_of(gone), merkle.entry_hash(gone, d.pop(gone)), None)
    fresh = tree_of(d, depth=8)
    assert t.leaves == fresh.leaves and t.level(3) == fresh.level(3) and t.count == fresh.count


@pytest.mark.parametrize("start,end", [(0, 0), (100, 5_000), (MAX_TOKEN - 1000, 2000),
                                       (MAX_TOKEN, 77), (2**63, 2**63 - 1)])
def test_bucket_ranges_cover_exactly_their_keys(start, end):
    depth = 5
    t = merkle.MerkleTree(start, end, depth)
    rng = random.Random(start ^ end)
    width = merkle.width_of(start, end)
    tokens = [(start + 1 + rng.randrange(width)) & merkle.MASK for _ in range(300)]
    tokens += [(start + 1) & merkle.MASK, end]
    for b in (0, 3, 4, 31):
        ranges = merkle.bucket_ranges(start, end, depth, [b])
        for tok in tokens:
            assert (t.bucket(tok) == b) == any(in_range(tok, s, e) for s, e in ranges)


def test_bucket_ranges_merge_adjacent_buckets():
    assert merkle.bucket_ranges(0, 0, 2, [1, 2]) == [(2**62, 3 * 2**62)]
    assert merkle.bucket_ranges(0, 0, 0, [0]) == [(0, 0)]  # the whole ring


def test_pack_round_trips():
    hs = [0, 1, merkle.MASK, 12345]
    assert merkle.unpack_hashes(merkle.pack_hashes(hs)) == hs
    assert merkle.unpack_indices(merkle.pack_indices([0, 7, 2**24])) == [0, 7, 2**24]
    with pytest.raises(ValueError):
        merkle.unpack_hashes(b"123")


def test_compare_depth():
    assert merkle.compare_depth(0, 2, 20) == 0
    assert merkle.compare_depth(1_000_000, 2, 20) == 19
    assert merkle.compare_depth(10**9, 2, 20) == 20


# -- sessions ------------------------------------------------------------------------------------


def test_session_between_equal_replicas_is_one_round_trip():
    d = data(400)
    peer = FakePeer(dict(d))
    stats = run_session(dict(d), peer)
    assert peer.calls == ["merkle_open"] and stats.keys_sent == stats.keys_received == 0


def test_session_repairs_both_ways_and_touches_only_differing_keys():
    base = data(2000)
    local, remote = dict(base), dict(base)
    ks = sorted(base)
    for k in ks[:5]:
        del remote[k]  # the peer lacks 5 keys
    for k in ks[100:103]:
        del local[k]  # we lack 3
    for k in ks[500:502]:
        remote[k] = versions.merge_bytes(remote[k], vs_of(b"newer", "b", 2))  # peer is ahead on 2
    peer = FakePeer(remote)
    stats = run_session(local, peer)
    assert local == remote
    assert stats.keys_sent == 5 and stats.keys_received == 5
    assert stats.keys_compared < 100  # only keys under differing buckets were listed
    assert run_session(local, peer).keys_sent == 0


def test_session_on_a_wrapping_sub_range_leaves_other_keys_alone():
    base = data(1000)
    start, end = MAX_TOKEN - 2**62, 2**61
    local, remote = dict(base), {}
    outside = {k: v for k, v in base.items() if not in_tree_range(k, start, end)}
    remote.update(outside)
    run_session(local, FakePeer(remote), start, end)
    assert remote == base  # the inside keys arrived; outside ones were there already
    peer2 = FakePeer({})
    run_session(dict(base), peer2, start, end)
    assert all(in_tree_range(k, start, end) for k in peer2.store)


def test_session_with_an_empty_side():
    d = data(300)
    local: dict = {}
    stats = run_session(local, FakePeer(dict(d)))
    assert local == d and stats.keys_received == 300


def test_session_refuses_malformed_sets_from_the_peer():
    d = data(10)
    remote = dict(d)
    k = next(iter(d))
    bad = storage_key(b"bad")
    remote[bad] = b"\x00garbage"
    local = dict(d)
    stats = run_session(local, FakePeer(remote), params=ae.Params())
    assert bad not in local and stats.invalid == 1 and k in local


# -- planning ------------------------------------------------------------------------------------


def test_intersect_handles_wrapping_and_whole_ranges():
    assert ae.intersect((0, 0), (10, 20)) == [(10, 20)]
    assert ae.intersect((10, 20), (15, 30)) == [(15, 20)]
    assert ae.intersect((10, 20), (20, 30)) == []
    assert ae.intersect((MAX_TOKEN - 5, 5), (0, 0)) == [(MAX_TOKEN - 5, 5)]
    assert ae.intersect((MAX_TOKEN - 5, 5), (2, MAX_TOKEN - 3)) == [(2, 5), (MAX_TOKEN - 5, MAX_TOKEN - 3)]
    assert ae.intersect((100, 50), (40, 110)) == [(40, 50), (100, 110)]


def test_plan_merges_ranges_with_the_same_peers():
    ranges = [(40, 10), (10, 20), (20, 30), (30, 40)]
    reps = {10: ["a", "b"], 20: ["a", "b"], 30: ["b", "c"], 40: ["a", "b"]}
    tasks = ae.plan(ranges, lambda t: reps[t], "a")
    assert tasks == [ae.Task(30, 20, ("b",))]
    assert ae.plan(ranges, lambda t: reps[t], "c") == [ae.Task(20, 30, ("b",))]
    assert ae.plan(ranges, lambda t: reps[t], "a", only=(15, 35)) == [ae.Task(15, 20, ("b",)),
                                                                     ae.Task(30, 35, ("b",))]


def test_parse_range():
    assert ae.parse_range("1:2") == (1, 2)
    with pytest.raises(Exception):
        ae.parse_range("1-2")
