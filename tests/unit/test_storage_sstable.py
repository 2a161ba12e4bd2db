"""SSTable writer and reader: lookups, iteration, metadata, block cache, compression."""

from __future__ import annotations

import random

import pytest

from ringkv.errors import InvalidRequest
from ringkv.storage.block_cache import BlockCache
from ringkv.storage.bloom import key_hash
from ringkv.storage.fs import OsFileSystem
from ringkv.storage.sstable_reader import SSTableReader, TableStats
from ringkv.storage.sstable_writer import SSTableWriter


def build(path, items, compress=False, block_bytes=256):
    w = SSTableWriter(OsFileSystem(), str(path), block_bytes=block_bytes, compress=compress,
                      bloom_fp_rate=0.01, expected_keys=len(items))
    w.add_all(items)
    return w.finish(created=123.0, max_seq=77)


def sample(n=2000, seed=1):
    rnd = random.Random(seed)
    keys = sorted({rnd.randbytes(rnd.randint(1, 24)) for _ in range(n)})
    out = []
    for i, k in enumerate(keys):
        if i % 10 == 0:
            out.append((k, float(i)))  # tombstone
        elif i % 10 == 1:
            out.append((k, [b"ttl%d" % i, 1000.0 + i, False]))
        else:
            out.append((k, rnd.randbytes(rnd.randint(0, 300))))
    return out


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip(tmp_path, compress):
    items = sample()
    meta = build(tmp_path / "t.sst", items, compress)
    stats = TableStats()
    r = SSTableReader(OsFileSystem(), str(tmp_path / "t.sst"), 1, BlockCache(1 << 20), stats)
    assert r.min_key == items[0][0] and r.max_key == items[-1][0]
    assert r.entries == len(items) == meta["entries"]
    assert r.meta["tombstones"] == len(items[::10]) and r.meta["created"] == 123.0
    assert r.max_seq == 77 and r.meta["blocks"] > 10
    for k, e in items:
        assert r.may_contain(key_hash(k))
        assert r.get(k) == e
    assert list(r.items()) == items
    lo, hi = items[100][0], items[900][0]
    assert list(r.items(lo, hi)) == items[100:900]
    assert list(r.items(items[-1][0] + b"\x00")) == []
    assert stats.blocks_read > 0 and stats.block_cache_hits > 0
    r.close()


def test_absent_keys_between_present_ones(tmp_path):
    items = [(b"k%05d" % i, b"v") for i in range(0, 1000, 2)]
    build(tmp_path / "t.sst", items)
    r = SSTableReader(OsFileSystem(), str(tmp_path / "t.sst"), 1, BlockCache(1 << 20), TableStats())
    for i in range(1, 1000, 2):
        assert r.get(b"k%05d" % i) is None
    assert r.get(b"zzz") is None
    r.close()


def test_keys_must_ascend(tmp_path):
    w = SSTableWriter(OsFileSystem(), str(tmp_path / "t.sst"), block_bytes=256, compress=False,
                      bloom_fp_rate=0.01, expected_keys=2)
    w.add(b"b", b"1")
    with pytest.raises(InvalidRequest):
        w.add(b"a", b"1")
    w.abort()
    assert not (tmp_path / "t.sst").exists()


def test_block_cache_is_bounded_lru():
    c = BlockCache(100)
    for i in range(10):
        c.put(i, ("blk", i), 30)
    assert c.size <= 100 and len(c) == 3
    assert c.get(9) == ("blk", 9) and c.get(0) is None
    c.touch(7)
    c.put(10, ("blk", 10), 30)
    assert c.get(7) is not None and c.get(8) is None
    c.put(11, "huge", 1000)
    assert c.get(11) is None


def test_bulk_add_matches_per_entry_add(tmp_path):
    items = sample(seed=3)
    build(tmp_path / "a.sst", items)
    w = SSTableWriter(OsFileSystem(), str(tmp_path / "b.sst"), block_bytes=256, compress=False,
                      bloom_fp_rate=0.01, expected_keys=len(items))
    w.add_sorted([k for k, _ in items], [e for _, e in items])
    w.finish(created=123.0, max_seq=77)
    assert (tmp_path / "a.sst").read_bytes() == (tmp_path / "b.sst").read_bytes()
