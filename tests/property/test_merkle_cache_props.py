"""A kept Merkle tree refreshed from the write journal equals a tree built from scratch,
whatever writes, overwrites, deletes, flushes and refreshes happen in between
(hypothesis; a real engine on the in-memory file system, through repair.TreeStore)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv import merkle
from ringkv.write_tracker import SEGMENT_SHIFT

from tests.unit.test_merkle_cache import MAX, Fixture, assert_same, skey, vs_of

# tokens crowd a few segments (so refreshes, not rebuilds, are the common case) and the
# edges of the token space (wrapping ranges)
segments = st.sampled_from([0, 1, 2, 77, 1 << 19, (1 << 20) - 1])
tokens = st.one_of(
    st.tuples(segments, st.integers(0, (1 << SEGMENT_SHIFT) - 1)).map(lambda t: t[0] << SEGMENT_SHIFT | t[1]),
    st.integers(0, MAX))
ops = st.lists(st.one_of(
    st.tuples(st.just("put"), tokens, st.integers(0, 2), st.binary(max_size=3)),
    st.tuples(st.just("overwrite"), st.integers(0, 1000), st.just(0), st.binary(max_size=3)),
    st.tuples(st.just("delete"), st.integers(0, 1000), st.just(0), st.just(b"")),
    st.tuples(st.just("flush"), st.just(0), st.just(0), st.just(b"")),
    st.tuples(st.just("refresh"), st.just(0), st.just(0), st.just(b"")),
), max_size=40)
ranges = st.one_of(st.just((0, 0)), st.tuples(st.integers(0, MAX), st.integers(0, MAX)),
                   st.tuples(segments, segments).map(lambda t: ((t[0] << SEGMENT_SHIFT) + 5,
                                                                (t[1] << SEGMENT_SHIFT) + 9)))


async def scenario(initial, steps, rng, depth, journal) -> None:
    fx = Fixture(max_journal=journal)
    start, end = rng
    written: list[bytes] = []
    try:
        for t, s in initial:
            written.append(fx.put(t, b"i", bytes([s])))

        async def refresh() -> None:
            co = await fx.store.checkout(start, end, depth)
            try:
                assert_same(co.tree, fx.fresh(start, end, depth))
            finally:
                fx.store.checkin(co)

        await refresh()
        for i, (op, a, b, value) in enumerate(steps):
            if op == "put":
                written.append(fx.put(a, value, bytes([b])))
            elif op == "overwrite" and written:
                fx.te.put(written[a % len(written)], vs_of(value, "o", 2.0 + i))
            elif op == "delete" and written:
                fx.te.delete(written[a % len(written)])
            elif op == "flush":
                fx.engine.flush()
            elif op == "refresh":
                await refresh()
        await refresh()
    finally:
        fx.close()


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(tokens, st.integers(0, 2)), max_size=40), ops, ranges,
       st.integers(0, 10), st.sampled_from([2, 64, 1 << 22]))
def test_a_refreshed_tree_equals_a_full_build(initial, steps, rng, depth, journal):
    asyncio.run(scenario(initial, steps, rng, depth, journal))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(tokens, st.integers(0, 2)), max_size=30), ranges, st.integers(1, 10))
def test_rescanning_any_buckets_of_an_unchanged_store_changes_nothing(initial, rng, depth):
    async def run() -> None:
        fx = Fixture()
        try:
            for t, s in initial:
                fx.put(t, b"i", bytes([s]))
            tree = fx.fresh(*rng, depth)
            before = (tree.root(), tree.count, dict(tree.leaves), dict(tree.counts))
            buckets = list(range(0, 1 << depth, 3))
            ranges_ = merkle.bucket_ranges(tree.start, tree.end, depth, buckets)
            from ringkv.repair import iter_ranges
            tree.rescan(buckets, iter_ranges(fx.engine, ranges_))
            assert (tree.root(), tree.count, tree.leaves, tree.counts) == before
        finally:
            fx.close()
    asyncio.run(run())
