"""Merkle tree properties (hypothesis): diff finds exactly the buckets with differing keys,
an incrementally maintained tree equals a rebuilt one, and a session makes replicas equal."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv import merkle, versions
from ringkv.ring import MAX_TOKEN, in_range, token_of

from tests.unit.test_merkle import FakePeer, run_session

tokens = st.integers(0, MAX_TOKEN)
values = st.binary(max_size=4)


def skey_of(token: int, suffix: int) -> bytes:
    return token.to_bytes(8, "big") + suffix.to_bytes(2, "big")


def vs_of(value: bytes, node: str = "a") -> bytes:
    return versions.encode(versions.update(versions.EMPTY, {}, node, value, 1.0))


stores = st.dictionaries(st.tuples(tokens, st.integers(0, 3)).map(lambda t: skey_of(*t)),
                         values.map(vs_of), max_size=60)
ranges = st.tuples(tokens, tokens)


def inside(d: dict, start: int, end: int) -> dict:
    return {k: v for k, v in d.items() if in_range(token_of(k), start, end)}


@settings(max_examples=150, deadline=None)
@given(stores, stores, ranges, st.integers(0, 8))
def test_diff_is_exactly_the_buckets_holding_differing_keys(a, b, rng, depth):
    start, end = rng
    a, b = inside(a, start, end), inside(b, start, end)
    ta, tb = merkle.build(start, end, a.items(), depth), merkle.build(start, end, b.items(), depth)
    differing = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert set(merkle.diff(ta, tb)) == {ta.bucket(token_of(k)) for k in differing}


@settings(max_examples=150, deadline=None)
@given(stores, st.lists(st.tuples(st.integers(0, 59), st.one_of(st.none(), values)), max_size=30),
       ranges, st.integers(0, 8), st.integers(0, 8))
def test_incremental_updates_equal_a_rebuild(store, updates, rng, depth, cached):
    start, end = rng
    store = inside(store, start, end)
    tree = merkle.build(start, end, store.items(), depth)
    tree.level(min(cached, depth))
    keys = sorted(store)
    for i, value in updates:
        if not keys:
            break
        k = keys[i % len(keys)]
        old = merkle.entry_hash(k, store[k]) if k in store else None
        if value is None:
            store.pop(k, None)
            new = None
        else:
            store[k] = vs_of(value, "b")
            new = merkle.entry_hash(k, store[k])
        tree.replace(token_of(k), old, new)
    fresh = merkle.build(start, end, store.items(), depth)
    assert tree.leaves == fresh.leaves and tree.count == fresh.count
    assert tree.root() == fresh.root() == fresh.level(0).get(0, 0)
    assert all(tree.level(d) == fresh.level(d) for d in range(depth + 1))


@settings(max_examples=80, deadline=None)
@given(stores, stores, ranges)
def test_a_session_leaves_both_sides_with_the_join(a, b, rng):
    start, end = rng
    expected = dict(a)
    for k, v in inside(b, start, end).items():
        expected[k] = v if k not in expected else versions.merge_bytes(expected[k], v)
    peer = FakePeer(dict(b))
    local = dict(a)
    run_session(local, peer, start, end, depth=6)
    assert inside(local, start, end) == inside(peer.store, start, end) == inside(expected, start, end)
    assert {k: v for k, v in local.items() if not in_range(token_of(k), start, end)} == \
        {k: v for k, v in a.items() if not in_range(token_of(k), start, end)}
