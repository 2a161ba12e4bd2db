"""SSTable writer and reader: lookups, iteration, metadata, block cache, compression."""

from __future__ import annotations

import random
import sys
import zlib

import msgpack
import pytest

from ringkv.errors import Corruption, InvalidRequest
from ringkv.storage import block_cache
from ringkv.storage import sstable_format as fmt
from ringkv.storage import sstable_reader as sreader
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


def test_block_cache_discard_range_drops_only_those_blocks():
    c = BlockCache(1000)
    for i in range(10):
        c.put((1 << 32) + i, ("blk", i), 30)
        c.put((2 << 32) + i, ("blk", i), 30)
    c.discard_range(1 << 32, 10)
    assert len(c) == 10 and c.size == 300
    assert all(c.get((1 << 32) + i) is None and c.get((2 << 32) + i) for i in range(10))
    c.discard_range(3 << 32, 5)  # nothing cached there: no change
    assert len(c) == 10


def test_obsolete_table_leaves_the_cache(tmp_path):
    items = sample()
    build(tmp_path / "t.sst", items, False)
    cache = BlockCache(1 << 20)
    r = SSTableReader(OsFileSystem(), str(tmp_path / "t.sst"), 1, cache, TableStats())
    for k, e in items:
        assert r.get(k) == e
    assert len(cache) > 10
    r.acquire()  # a scan still holds the file
    r.mark_obsolete()
    assert len(cache) == 0 and cache.size == 0
    r.release()
    r.close()


def test_auto_block_cache_capacity(monkeypatch):
    assert block_cache.capacity_for(12345) == 12345 and block_cache.capacity_for(0) == 0
    monkeypatch.setattr(block_cache, "_memory_available", lambda: 24 << 30)
    assert block_cache.capacity_for(block_cache.AUTO) == 1 << 30
    monkeypatch.setattr(block_cache, "_memory_available", lambda: 1 << 30)
    assert block_cache.capacity_for(block_cache.AUTO) == 128 << 20
    monkeypatch.setattr(block_cache, "_memory_available", lambda: 64 << 20)
    assert block_cache.capacity_for(block_cache.AUTO) == 32 << 20
    monkeypatch.setattr(block_cache, "_memory_available", lambda: None)
    assert block_cache.capacity_for(block_cache.AUTO) == 64 << 20


def test_bulk_add_matches_per_entry_add(tmp_path):
    items = sample(seed=3)
    build(tmp_path / "a.sst", items)
    w = SSTableWriter(OsFileSystem(), str(tmp_path / "b.sst"), block_bytes=256, compress=False,
                      bloom_fp_rate=0.01, expected_keys=len(items))
    w.add_sorted([k for k, _ in items], [e for _, e in items])
    w.finish(created=123.0, max_seq=77)
    assert (tmp_path / "a.sst").read_bytes() == (tmp_path / "b.sst").read_bytes()


# -- format version 2: in-place block search, raw-block cache, old-version reads ---------

def open_reader(path, cache=None, stats=None):
    return SSTableReader(OsFileSystem(), str(path), 1,
                         BlockCache(1 << 20) if cache is None else cache,
                         TableStats() if stats is None else stats)


@pytest.mark.parametrize("compress", [False, True])
def test_fixed_width_keys_lookup_in_place(tmp_path, compress):
    # 16-byte keys with long shared runs, so a find() can match across two adjacent keys
    rnd = random.Random(5)
    keys = sorted({bytes(rnd.choice(b"ab") for _ in range(3)) * 5 + b"a" for _ in range(200)}
                  | {b"a" * 16, b"b" * 16, b"ab" * 8, b"ba" * 8})
    items = [(k, b"v" + k if i % 3 else float(i)) for i, k in enumerate(keys)]
    build(tmp_path / "t.sst", items, compress, block_bytes=200)
    r = open_reader(tmp_path / "t.sst")
    present = set(keys)
    for k, e in items:
        assert r.get(k) == e
    for _ in range(2000):  # absent keys of the same width, and of other widths
        k = bytes(rnd.choice(b"ab") for _ in range(rnd.choice([15, 16, 16, 16, 17])))
        if k not in present:
            assert r.get(k) is None
    for k in keys:  # substrings that straddle two stored keys
        assert r.get(k[8:] + k[:8]) == dict(items).get(k[8:] + k[:8])
    assert list(r.items()) == items
    r.close()


def test_block_layout_records_key_width(tmp_path):
    fixed = [(b"%016d" % i, b"x" * (i % 7)) for i in range(50)]
    body = fmt.encode_data_block([k for k, _ in fixed], [e for _, e in fixed], False)
    blk = fmt.parse_data_block("p", 0, body)
    assert blk[1:3] == (50, 16)
    keys, entries = fmt.decode_data_block("p", 0, blk, 2)
    assert list(zip(keys, entries)) == fixed
    var = [(b"k%d" % i, [b"v", 5.0, False]) for i in range(10, 30)] + [(b"k%d" % i, b"") for i in range(300, 310)]
    var.sort()
    body = fmt.encode_data_block([k for k, _ in var], [e for _, e in var], False)
    blk = fmt.parse_data_block("p", 0, body)
    assert blk[1:3] == (30, 0)
    keys, entries = fmt.decode_data_block("p", 0, blk, 2)
    assert list(zip(keys, entries)) == var


def test_entry_sizes_counted_without_packing_match_msgpack():
    """encode_data_block counts the (value, expire_at, base) entries of merge mode instead
    of packing them twice: every shape must count what msgpack writes (a wrong count is
    a RuntimeError at flush, refused before anything is written)."""
    shapes = []
    for n in (0, 1, 31, 32, 255, 256, 65535, 65536):
        for expire in (None, 1.5e9):
            for base in (True, False):
                shapes += [(b"v" * n, expire, base), [b"v" * n, expire, base]]
    shapes += [[b"v", 1.0, 1], [b"v", 7, False], [b"v", None], [b"v", None, True, 4]]  # packed
    for entry in shapes:
        assert fmt._packed_size(entry) == len(msgpack.packb(entry, use_bin_type=True)), entry
    keys = [b"k%04d" % i for i in range(len(shapes))]
    blk = fmt.parse_data_block("p", 0, fmt.encode_data_block(keys, shapes, False))
    assert fmt.decode_data_block("p", 0, blk, 2)[1] == [list(e) for e in shapes]


def write_v1_table(path, items, monkeypatch, compress=False):
    """A version-1 file, as the previous release wrote it."""
    def encode_v1(keys, entries, compress):
        body = msgpack.packb([keys, entries], use_bin_type=True)
        return zlib.compress(body, 1) if compress else body
    with monkeypatch.context() as m:
        m.setattr(fmt, "VERSION", 1)
        m.setattr(fmt, "encode_data_block", encode_v1)
        return build(path, items, compress)


@pytest.mark.parametrize("compress", [False, True])
def test_reads_version_1_tables(tmp_path, monkeypatch, compress):
    items = sample(seed=4)
    meta = write_v1_table(tmp_path / "t.sst", items, monkeypatch, compress)
    assert meta["format"] == 1
    stats = TableStats()
    r = open_reader(tmp_path / "t.sst", stats=stats)
    assert r.version == 1
    for k, e in items:
        assert r.get(k) == e
        assert r.get(k + b"\x00") in (None, dict(items).get(k + b"\x00"))
    assert list(r.items()) == items
    assert stats.block_cache_hits > 0
    r.close()
    assert build(tmp_path / "new.sst", items, compress)["format"] == fmt.VERSION == 2


def test_unknown_format_version_is_refused(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(fmt, "VERSION", 3)
        build(tmp_path / "t.sst", sample(200))
    with pytest.raises(Corruption, match="unsupported SSTable format version 3"):
        open_reader(tmp_path / "t.sst")


def test_block_with_valid_crc_but_bad_layout_is_corruption(tmp_path):
    items = [(b"k%05d" % i, b"v" * 20) for i in range(100)]
    build(tmp_path / "t.sst", items)
    r = open_reader(tmp_path / "t.sst")
    off, length = r.offsets[0], r.lengths[0]
    r.close()
    data = bytearray((tmp_path / "t.sst").read_bytes())
    body = bytearray(data[off:off + length])
    body[-8:-4] = (10_000).to_bytes(4, "little")  # entry count that cannot fit
    data[off:off + length + 4] = fmt.frame_block(bytes(body))
    (tmp_path / "t.sst").write_bytes(bytes(data))
    r = open_reader(tmp_path / "t.sst")
    with pytest.raises(Corruption, match="bad data block layout") as ei:
        r.get(items[0][0])
    assert ei.value.offset == off
    with pytest.raises(Corruption):
        list(r.items())
    assert r.get(items[-1][0]) == items[-1][1]  # other blocks still read
    r.close()


def test_cache_holds_checked_raw_blocks_at_their_real_size(tmp_path):
    items = [(b"%016d" % i, b"v" * 100) for i in range(5000)]
    build(tmp_path / "t.sst", items, block_bytes=4096)
    cache = BlockCache(1 << 30)
    r = open_reader(tmp_path / "t.sst", cache=cache)
    for k, _ in items:
        r.get(k)
    assert len(cache) == r._nblocks
    body_bytes = sum(r.lengths)
    assert cache.size == body_bytes + len(cache) * sreader._BLOCK_OVERHEAD
    assert sreader._BLOCK_OVERHEAD >= block_cache.ENTRY_OVERHEAD + sys.getsizeof(b"")
    for blk in cache._blocks.values():
        assert blk[0].__class__ is bytes
    small = BlockCache(cache.size // 2)
    r2 = SSTableReader(OsFileSystem(), str(tmp_path / "t.sst"), 2, small, TableStats())
    for k, e in items:
        assert r2.get(k) == e
    assert 0 < small.size <= small.capacity and len(small) < r._nblocks
    r.close()
    r2.close()
