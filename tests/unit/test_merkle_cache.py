"""Kept Merkle trees (ringkv.merkle_cache, ringkv.write_tracker, repair.TreeStore) over a
real engine on the in-memory file system: a refresh rescans only the segments written
since, equals a full build, and the cache's rules (busy, age, journal bound, memory bound,
failure) hold."""

from __future__ import annotations

import asyncio

import pytest

from ringkv import merkle, versions
from ringkv.config import StorageConfig
from ringkv.merkle_cache import TreeCache, affected_buckets
from ringkv.repair import TreeStore, build_tree, rescan_tree, scan_ranges
from ringkv.storage.engine import Engine
from ringkv.testing.fake_clock import FakeClock
from ringkv.testing.fs import MemFileSystem
from ringkv.write_tracker import SEGMENT_SHIFT, TrackedEngine, WriteTracker, segment_of

MAX = (1 << 64) - 1


def vs_of(value: bytes, node: str = "w", t: float = 1.0) -> bytes:
    return versions.encode(versions.update(versions.EMPTY, {}, node, value, t))


def skey(token: int, suffix: bytes = b"k") -> bytes:
    return token.to_bytes(8, "big") + suffix


class Fixture:
    def __init__(self, max_journal: int = 1 << 22, max_bytes: int = 1 << 30, max_trees: int = 16,
                 max_age: float = 1e9) -> None:
        self.engine = Engine.open("/db", StorageConfig(sync_mode="off"), merge=versions.merge_bytes,
                                  fs=MemFileSystem())
        self.tracker = WriteTracker(max_journal)
        self.te = TrackedEngine(self.engine, self.tracker)
        self.clock = FakeClock()
        self.cache = TreeCache(self.tracker, max_trees, max_bytes, max_age)
        self.store = TreeStore(lambda: self.te, self.cache, self.clock.monotonic)

    def put(self, token: int, value: bytes = b"v", suffix: bytes = b"k") -> bytes:
        k = skey(token, suffix)
        self.te.put(k, vs_of(value))
        return k

    def fresh(self, start: int, end: int, depth: int) -> merkle.MerkleTree:
        return build_tree(self.engine, start, end, depth)

    def close(self) -> None:
        self.engine.close()


@pytest.fixture
def fx():
    f = Fixture()
    yield f
    f.close()


def assert_same(tree: merkle.MerkleTree, fresh: merkle.MerkleTree) -> None:
    assert (tree.root(), tree.count, tree.leaves, tree.counts) == \
        (fresh.root(), fresh.count, fresh.leaves, fresh.counts)
    for d in range(tree.depth + 1):
        assert tree.level(d) == fresh.level(d), d


def test_segments_are_the_top_20_bits_of_the_token():
    assert segment_of(skey(0)) == 0 and segment_of(skey(MAX)) == (1 << 20) - 1
    assert segment_of(skey(5 << SEGMENT_SHIFT | 12345)) == 5


def test_every_write_method_is_noted():
    t = WriteTracker()
    calls = []

    class Stub:
        def get(self, k):
            return None

        def scan(self, a, b):
            return iter(())

        def put(self, k, v, **kw):
            calls.append("put")

        def delete(self, k):
            calls.append("delete")

        def aput_nowait(self, k, v, base=False, wait=True):
            calls.append(f"aput_nowait base={base} wait={wait}")

        def durable_nowait(self):
            return None

        async def aput(self, k, v, **kw):
            calls.append("aput")
            raise OSError("disk full")  # applied, then durability failed: still noted

        async def adelete(self, k):
            calls.append("adelete")

    te = TrackedEngine(Stub(), t)
    pos = t.mark()
    te.put(skey(1 << SEGMENT_SHIFT), b"")
    te.delete(skey(2 << SEGMENT_SHIFT))
    te.aput_nowait(skey(3 << SEGMENT_SHIFT), b"", base=True)  # the options pass through
    with pytest.raises(OSError):
        asyncio.run(te.aput(skey(4 << SEGMENT_SHIFT), b""))
    asyncio.run(te.adelete(skey(5 << SEGMENT_SHIFT)))
    te.put(skey(5 << SEGMENT_SHIFT | 7), b"")  # same segment, same epoch: one journal entry
    assert calls == ["put", "delete", "aput_nowait base=True wait=True", "aput", "adelete", "put"]
    assert t.changed_since(pos) == [1, 2, 3, 4, 5] and len(t.journal) == 5
    assert te.get(b"x") is None  # reads pass through


def test_the_journal_lists_changes_after_a_mark_and_is_bounded():
    t = WriteTracker(max_journal=8)
    p0 = t.mark()
    t.touch(skey(1 << SEGMENT_SHIFT))
    p1 = t.mark()
    t.touch(skey(1 << SEGMENT_SHIFT))  # again, in the new epoch: listed after p1
    t.touch(skey(2 << SEGMENT_SHIFT))
    assert t.changed_since(p0) == [1, 2] and t.changed_since(p1) == [1, 2]
    assert t.changed_since(t.mark()) == []
    for s in range(3, 20):
        t.touch(skey(s << SEGMENT_SHIFT))
    assert t.changed_since(p0) is None and t.forgotten > 0  # over the bound: rebuild in full


async def test_a_refresh_rescans_only_written_segments_and_equals_a_full_build(fx):
    for i in range(2000):
        fx.put((i * 0x9E3779B97F4A7C15) & MAX)
    fx.engine.flush()
    co = await fx.store.checkout(0, 0, 12)
    assert co.buckets is None and co.reason == "new"
    fx.store.checkin(co)
    written = [fx.put((i * 0x9E3779B97F4A7C15) & MAX, b"new") for i in range(0, 2000, 200)]
    written.append(fx.put(77 << SEGMENT_SHIFT, b"added"))
    fx.te.delete(skey((3 * 0x9E3779B97F4A7C15) & MAX))
    co = await fx.store.checkout(0, 0, 12)
    assert co.reason == "refresh" and len(co.buckets) == 12  # one leaf per written segment
    assert co.keys_rescanned < 40
    assert_same(co.tree, fx.fresh(0, 0, 12))
    fx.store.checkin(co)
    view = fx.cache.view()
    assert view["full_builds"] == 1 and view["refreshes"] == 1 and view["leaves_rescanned"] == 12
    co = await fx.store.checkout(0, 0, 12)  # nothing written since: nothing rescanned
    assert co.buckets == [] and co.keys_rescanned == 0
    fx.store.checkin(co)


async def test_a_write_racing_the_rescan_is_picked_up_by_the_next_refresh(fx):
    for i in range(300):
        fx.put((i * 0x9E3779B97F4A7C15) & MAX)
    co = await fx.store.checkout(0, 0, 10)
    fx.store.checkin(co)
    fx.put(5 << SEGMENT_SHIFT, b"before")
    co = fx.cache.checkout(0, 0, 10, fx.clock.monotonic())  # the mark, as TreeStore takes it
    ranges = merkle.bucket_ranges(0, 0, 10, co.buckets)
    entries = scan_ranges(fx.engine, ranges)  # the rescan's engine snapshot...
    fx.put(5 << SEGMENT_SHIFT | 1, b"racing")  # ...then a write the rescan does not see
    n = co.tree.rescan(co.buckets, entries)
    fx.cache.refreshed(co, co.tree, n, fx.clock.monotonic())
    fx.cache.checkin(co, True, fx.clock.monotonic())
    assert co.tree.root() != fx.fresh(0, 0, 10).root()  # behind by the racing write
    co = await fx.store.checkout(0, 0, 10)
    assert co.reason == "refresh" and co.buckets
    assert_same(co.tree, fx.fresh(0, 0, 10))
    fx.store.checkin(co)


async def test_a_busy_tree_is_not_shared_and_a_failed_one_is_dropped(fx):
    for i in range(100):
        fx.put((i * 0x9E3779B97F4A7C15) & MAX)
    held = await fx.store.checkout(0, 0, 8)
    other = await fx.store.checkout(0, 0, 8)
    assert other.reason == "busy" and not other.cached and other.tree is not held.tree
    fx.store.checkin(other)
    fx.store.checkin(held, ok=False)  # e.g. a session cancelled midway
    assert fx.cache.view()["trees"] == 0
    co = await fx.store.checkout(0, 0, 8)
    assert co.reason == "new"
    fx.store.checkin(co)


async def test_old_trees_are_rebuilt_and_memory_is_bounded():
    fx = Fixture(max_age=100.0)
    try:
        for i in range(500):
            fx.put((i * 0x9E3779B97F4A7C15) & MAX)
        fx.store.checkin(await fx.store.checkout(0, 0, 10))
        fx.clock.advance(101.0)
        co = await fx.store.checkout(0, 0, 10)
        assert co.reason == "aged" and co.buckets is None
        fx.store.checkin(co)
        size = co.tree.memory_bytes()
        fx.cache.max_bytes = size + size // 2  # room for one such tree, not two
        fx.store.checkin(await fx.store.checkout(1, 1, 10))  # another range, same data
        view = fx.cache.view()
        assert view["trees"] == 1 and view["evictions"] == 1 and view["bytes"] <= fx.cache.max_bytes
    finally:
        fx.close()


async def test_many_changed_segments_mean_a_full_build(fx):
    fx.store.checkin(await fx.store.checkout(0, 0, 4))  # 16 leaves
    for s in range(0, 1 << 20, 1 << 15):  # 32 segments spread over every leaf
        fx.put(s << SEGMENT_SHIFT)
    co = await fx.store.checkout(0, 0, 4)
    assert co.reason == "changes" and co.buckets is None
    assert_same(co.tree, fx.fresh(0, 0, 4))
    fx.store.checkin(co)


def brute_affected(tree: merkle.MerkleTree, segments: list[int]) -> list[int]:
    """Buckets whose token span meets a segment, by walking every bucket."""
    out = []
    for b in range(1 << tree.depth):
        lo, hi = merkle.bucket_offsets(tree.width, tree.depth, b)
        if lo == hi:
            continue
        first, last = (tree.start + 1 + lo) & MAX, (tree.start + hi) & MAX  # tokens, may wrap
        segs = {first >> SEGMENT_SHIFT, last >> SEGMENT_SHIFT}
        if first <= last:
            segs |= set(range(first >> SEGMENT_SHIFT, (last >> SEGMENT_SHIFT) + 1))
        else:
            segs |= set(range(first >> SEGMENT_SHIFT, 1 << 20)) | set(range(0, (last >> SEGMENT_SHIFT) + 1))
        if segs & set(segments):
            out.append(b)
    return out


@pytest.mark.parametrize("start,end,depth", [
    (MAX - 3 * (1 << SEGMENT_SHIFT), 3 * (1 << SEGMENT_SHIFT), 6),  # wraps through token 0
    (0, 0, 8),  # the whole ring
    (12345 << 40, (12345 << 40) + (40 << SEGMENT_SHIFT) + 17, 7),
])
def test_affected_buckets_are_those_meeting_a_segment(start, end, depth):
    tree = merkle.MerkleTree(start, end, depth)
    for segs in ([(1 << 20) - 1], [0], [1, 2, 3], [100], [start >> SEGMENT_SHIFT],
                 [(end >> SEGMENT_SHIFT) + 1, end >> SEGMENT_SHIFT]):
        expected = brute_affected(tree, segs)
        got = affected_buckets(tree, sorted(segs))
        assert got == (None if 2 * len(expected) > 1 << depth else expected), segs


def test_a_range_inside_one_segment_is_rebuilt_when_that_segment_changes():
    seg = 1 << SEGMENT_SHIFT
    narrow = merkle.MerkleTree(10 * seg + 5, 10 * seg + 1000, 3)
    assert affected_buckets(narrow, [10]) is None
    assert affected_buckets(narrow, [11]) == []


def test_scan_ranges_is_the_scans_of_each_range_from_one_snapshot(fx):
    for i in range(400):
        fx.put((i * 0x9E3779B97F4A7C15) & MAX, b"%d" % i)
        if i == 200:
            fx.engine.flush()  # some entries in a table, some in the memtable
    fx.te.delete(skey((7 * 0x9E3779B97F4A7C15) & MAX))
    bounds = [(skey(1 << 60, b""), skey(3 << 60, b"")), (skey(9 << 60, b""), None),
              (b"", skey(1 << 59, b""))]
    expected = [kv for lo, hi in bounds for kv in fx.engine.scan(lo, hi)]
    it = fx.engine.scan_ranges(bounds)
    fx.put(2 << 60, b"after the snapshot")
    assert list(it) == expected and len(expected) > 100
    assert list(fx.engine.scan_ranges([])) == []


async def test_a_tree_checked_in_twice_is_not_released_from_its_next_borrower(fx):
    fx.put(1 << 62)
    first = await fx.store.checkout(0, 0, 6)
    fx.store.checkin(first)
    second = await fx.store.checkout(0, 0, 6)
    assert second.reason == "refresh"
    fx.store.checkin(first)  # late duplicate: ignored
    third = await fx.store.checkout(0, 0, 6)
    assert third.reason == "busy"  # second still holds it
    fx.store.checkin(third)
    fx.store.checkin(second)
