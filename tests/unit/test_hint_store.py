"""The durable hint store (ringkv.hint_store) on the in-memory, crash-simulating fs."""

from __future__ import annotations

import os

import pytest

from ringkv import hint_store as hs
from ringkv.errors import Corruption
from ringkv.storage.commitlog_reader import BLOCK
from ringkv.testing.fs import MemFileSystem

ROOT = "/data/hints"


def open_store(fs, max_per_target=100, max_age=100.0):
    return hs.HintStore(ROOT, max_per_target, max_age, fs=fs)


def hint(target="n2", i=0, created=10.0):
    return hs.Hint(target, b"\x00" * 8 + f"k{i}".encode(), f"v{i}".encode(), created)


def put(store, *hints_):
    for h in hints_:
        assert store.reserve(h.target)
    assert store.write(hints_) == set()


def all_hints(store, target):
    return [h for seg in store.seal(target) for h in store.read(seg)]


def test_written_hints_survive_a_crash_and_reopen():
    fs = MemFileSystem()
    store = open_store(fs)
    put(store, hint(i=0), hint(i=1), hint("n3", 2))
    fs.crash()  # only what write() fsync'd survives
    store = open_store(fs)
    assert store.pending() == {"n2": 2, "n3": 1}
    assert [h.skey[8:] for h in all_hints(store, "n2")] == [b"k0", b"k1"]
    assert all_hints(store, "n3") == [hint("n3", 2)]


def test_replayed_segment_is_removed_and_counted():
    fs = MemFileSystem()
    store = open_store(fs)
    put(store, hint(i=0), hint(i=1))
    [seg] = store.seal("n2")
    put(store, hint(i=2))  # after the seal: goes to a new segment
    store.remove(seg, replayed=2)
    assert store.pending() == {"n2": 1}
    assert store.stats()["hints_replayed"] == 2
    assert [h.skey[8:] for h in all_hints(store, "n2")] == [b"k2"]
    assert store.stats()["hints_stored"] == 3


def test_count_bound_refuses_and_counts():
    store = open_store(MemFileSystem(), max_per_target=2)
    assert store.reserve("n2") and store.reserve("n2")
    assert not store.reserve("n2")
    assert store.reserve("n3")  # the bound is per target
    assert store.stats()["hints_dropped_overflow"] == 1
    store.release("n2")
    assert store.reserve("n2")


def test_age_bound_drops_old_segments():
    store = open_store(MemFileSystem(), max_age=100.0)
    put(store, hint(i=0, created=10.0))
    store.seal("n2")
    put(store, hint(i=1, created=150.0))
    assert store.expire(now=200.0) == 1  # 190 s old: dropped; 50 s old: kept
    assert store.pending() == {"n2": 1}
    assert store.stats()["hints_dropped_expired"] == 1
    assert store.expire(now=300.0) == 1  # the active segment expires too
    assert store.pending() == {}


def test_torn_tail_is_recovered():
    fs = MemFileSystem()
    store = open_store(fs)
    put(store, hint(i=0), hint(i=1))
    [seg] = store.seal("n2")
    data = fs.read_all(seg.path)
    cut = data[:-3]  # the last record cut short, as by a crash mid-write
    assert [h.skey[8:] for h in hs.decode_segment(cut, seg.path, "n2")] == [b"k0"]
    f = fs.open_write(seg.path)
    f.write(cut)
    f.sync()
    store = open_store(fs)
    assert store.pending() == {"n2": 1}


def test_lost_blocks_of_the_last_write_end_the_segment_like_a_torn_tail(caplog):
    """A power failure kept a block of the last (unsynced, unacknowledged) write from the
    disk while later blocks of it arrived (D44): the hints before the hole are kept, the
    rest ignored, and the segment is not quarantined with the acknowledged hints in it."""
    fs = MemFileSystem()
    store = open_store(fs)
    put(store, hint(i=0))  # acknowledged: synced on its own
    big = [hs.Hint("n2", b"\0" * 8 + b"k%d" % i, b"v" * 300, 10.0) for i in range(1, 9)]
    put(store, *big)  # the last write: ~2.7 KB, several blocks
    [seg] = store.seal("n2")
    data = bytearray(fs.read_all(seg.path))
    lo = (hs.HEADER_SIZE + 400) // BLOCK * BLOCK + BLOCK  # a block inside the last write
    data[lo:lo + BLOCK] = bytes(BLOCK)
    with pytest.raises(Corruption):  # without the zeros' shape: corruption as before
        broken = bytearray(data)
        broken[lo] = 1
        hs.decode_segment(bytes(broken), seg.path, "n2")
    kept = hs.decode_segment(bytes(data), seg.path, "n2")
    assert kept and kept[0].skey[8:] == b"k0" and len(kept) < 9
    assert "none of them acknowledged" in caplog.text
    f = fs.open_write(seg.path)
    f.write(bytes(data))
    f.sync()
    store = open_store(fs)
    assert store.pending() == {"n2": len(kept)} and store.stats()["hints_corrupt"] == 0


def test_corrupt_record_before_a_valid_one_is_corruption():
    fs = MemFileSystem()
    store = open_store(fs)
    put(store, hint(i=0), hint(i=1))
    [seg] = store.seal("n2")
    data = bytearray(fs.read_all(seg.path))
    data[hs.HEADER_SIZE + hs.FRAME.size + 2] ^= 0xFF  # a byte inside the first payload
    with pytest.raises(Corruption) as info:
        hs.decode_segment(bytes(data), seg.path, "n2")
    assert info.value.offset == hs.HEADER_SIZE
    f = fs.open_write(seg.path)
    f.write(bytes(data))
    f.sync()
    with pytest.raises(Corruption):
        store.read(seg)
    store.quarantine(seg)
    assert store.pending() == {} and store.stats()["hints_corrupt"] == 1


def test_corrupt_segment_is_quarantined_at_open():
    fs = MemFileSystem()
    store = open_store(fs)
    put(store, hint(i=0))
    [seg] = store.seal("n2")
    data = fs.read_all(seg.path)
    f = fs.open_write(seg.path)
    f.write(b"XXXX" + data[4:])
    f.sync()
    store = open_store(fs)
    assert store.pending() == {} and store.stats()["hints_corrupt"] == 1
    assert fs.exists(seg.path + ".corrupt")


def test_segments_roll_after_segment_hints(monkeypatch):
    monkeypatch.setattr(hs, "SEGMENT_HINTS", 2)
    store = open_store(MemFileSystem())
    put(store, hint(i=0), hint(i=1))
    put(store, hint(i=2))
    segs = store.seal("n2")
    assert [s.count for s in segs] == [2, 1]


def test_failed_write_releases_room():
    fs = MemFileSystem()
    store = open_store(fs)
    assert store.reserve("n2")
    fs.freeze_after(0)
    assert store.write([hint()]) == {"n2"}
    assert store.pending() == {}


def test_odd_node_ids_get_safe_directory_names():
    for node_id in ("n1", "node_7-a", "../etc", "host:7400", "ü"):
        name = hs.target_dir_name(node_id)
        assert os.sep not in name and name not in (".", "..")
        assert hs.target_of_dir(name) == node_id
