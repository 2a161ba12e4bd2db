"""Compaction policy (size-tiered, contiguous runs) and merge/purge rules."""

from __future__ import annotations

from ringkv.storage.compaction import merge_sources, pick_size_tiered, purge

MB = 1 << 20


def test_pick_size_tiered():
    assert pick_size_tiered([10 * MB, 10 * MB, 10 * MB], 4, 2.0) is None
    assert pick_size_tiered([10 * MB] * 4, 4, 2.0) == (0, 4)
    # newest small tables are a run; the big old one is not in it
    assert pick_size_tiered([MB, MB, MB, MB, 100 * MB], 4, 2.0) == (0, 4)
    # the cheapest run (smallest mean) wins
    assert pick_size_tiered([MB] * 4 + [50 * MB] * 4, 4, 2.0) == (0, 4)
    assert pick_size_tiered([1000] * 5, 4, 2.0) == (0, 5)  # tiny tables share a bucket
    assert pick_size_tiered([50 * MB, MB, 50 * MB, MB, 50 * MB], 3, 2.0) is None  # not contiguous


def test_merge_sources_lww_newest_wins():
    new = [(b"a", b"new"), (b"c", 1.0)]
    old = [(b"a", b"old"), (b"b", b"b"), (b"c", b"c")]
    assert list(merge_sources([new, old], None)) == [(b"a", b"new"), (b"b", b"b"), (b"c", 1.0)]


def test_merge_sources_merge_mode_folds_in_order():
    def cat(o: bytes, n: bytes) -> bytes:
        return o + n
    s1, s2, s3 = [(b"k", b"3")], [(b"k", b"2")], [(b"k", b"1"), (b"z", b"z")]
    assert list(merge_sources([s1, s2, s3], cat)) == [(b"k", b"123"), (b"z", b"z")]
    s2 = [(b"k", 5.0)]  # tombstone in the middle shadows older operands
    assert list(merge_sources([s1, s2, s3], cat)) == [(b"k", (b"3", None, True)), (b"z", b"z")]


def test_purge_rules():
    items = [(b"old-tomb", 10.0), (b"new-tomb", 95.0), (b"live", b"v"),
             (b"expired", [b"x", 20.0, False]), (b"ttl-live", [b"x", 200.0, False])]

    def run(older):
        return dict(purge(items, now=100.0, gc_grace=50.0, merge=None, purgeable=None,
                          older_may_hold=lambda k: k in older))

    out = run(set())
    assert set(out) == {b"new-tomb", b"live", b"ttl-live"}
    out = run({b"old-tomb", b"expired"})  # an older table may hold them: keep as tombstones
    assert out[b"old-tomb"] == 10.0 and out[b"expired"] == 20.0
