"""The engine's free-space guard (docs/decisions.md D36): below ``storage.min_free_bytes``
writes are refused whole with StorageFull, reads go on, writes resume once space is freed,
and a compaction waits for room. The file system is the in-memory one whose capacity a
test sets (its ``free_bytes`` is capacity minus the live files), so the disk fills at a
known point; tests/integration/test_disk_full.py does the same on a real small file
system with a node process."""

from __future__ import annotations

import pytest

from ringkv.config import KiB, MiB, StorageConfig
from ringkv.errors import StorageFull, from_wire
from ringkv.storage import Engine
from ringkv.storage.engine import SPACE_CHECK_BYTES, SPACE_RECHECK_S
from ringkv.testing.fake_clock import FakeClock
from ringkv.testing.fs import MemFileSystem

VALUE = b"v" * 100


def _open(fs: MemFileSystem, clock: FakeClock, **cfg) -> Engine:
    return Engine.open("/db", StorageConfig(**cfg), fs=fs, clock=clock)


def test_writes_below_the_floor_are_refused_whole_and_resume_once_space_is_freed():
    fs, clock = MemFileSystem(), FakeClock()
    fs.capacity = 6 * MiB
    e = _open(fs, clock, min_free_bytes=4 * MiB, memtable_bytes=64 * MiB)
    acked, refused = [], None
    for i in range(100_000):  # ~2 MiB fit above the floor: far fewer than this
        key = b"k%06d" % i
        try:
            e.put(key, VALUE)
        except StorageFull as exc:
            refused = (key, exc)
            break
        acked.append(key)
    assert refused is not None, "the guard never refused a write"
    key, exc = refused
    assert exc.free_bytes < exc.min_free_bytes == 4 * MiB and exc.path == "/db"
    assert "nothing was written" in str(exc)
    assert type(from_wire(exc.to_wire())) is StorageFull  # clients catch the same type
    # it refused before the disk filled: at most one check interval past the floor
    assert fs.free_bytes("/db") > 4 * MiB - SPACE_CHECK_BYTES
    assert len(acked) > 10_000  # and not long before the floor either
    assert e.get(key) is None  # refused whole: nothing of it is readable
    assert all(e.get(k) == VALUE for k in acked[::97])  # reads go on
    with pytest.raises(StorageFull):
        e.delete(acked[0])  # every kind of write
    st = e.stats()
    assert st["storage_full"] is True and st["writes_refused"] == 2  # the put and the delete
    assert st["min_free_bytes"] == 4 * MiB and st["free_bytes"] < 4 * MiB

    fs.capacity = _used(fs) + 4 * MiB + MiB // 4  # above the floor, not an eighth above
    clock.advance(SPACE_RECHECK_S)
    with pytest.raises(StorageFull):  # no flapping at the floor
        e.put(key, VALUE)
    fs.capacity = 64 * MiB  # the operator frees space
    with pytest.raises(StorageFull):  # the last reading stands for SPACE_RECHECK_S
        e.put(key, VALUE)
    clock.advance(SPACE_RECHECK_S)
    e.put(key, VALUE)  # no restart needed
    assert e.get(key) == VALUE and e.stats()["storage_full"] is False
    e.close()

    e = _open(fs, clock, min_free_bytes=4 * MiB)  # every acked write survives a restart
    assert all(e.get(k) == VALUE for k in acked) and e.get(key) == VALUE
    assert e.get(b"k%06d" % (len(acked) + 1)) is None
    e.close()


def test_zero_turns_the_guard_off():
    fs, clock = MemFileSystem(), FakeClock()
    fs.capacity = 1 * MiB
    with _open(fs, clock, min_free_bytes=0) as e:
        for i in range(20_000):  # past the capacity: nothing refuses
            e.put(b"k%06d" % i, VALUE)
        assert e.stats()["writes_refused"] == 0 and e.stats()["min_free_bytes"] == 0


def test_a_compaction_waits_until_its_output_fits():
    fs, clock = MemFileSystem(), FakeClock()
    e = _open(fs, clock, min_free_bytes=1 * KiB, compaction_min_threshold=4)
    for batch in range(4):
        if batch == 3:  # room for the last table, not for a compaction of all four
            fs.capacity = _used(fs) + 150 * KiB
        for i in range(500):
            e.put(b"k%05d" % (batch * 500 + i), VALUE)
        e.flush()
    assert e._bg.maybe_compact() is False  # what the compactor thread tries after a flush
    st = e.stats()
    assert st["sstables"] == 4 and st["compactions"] == 0 and st["compactions_deferred"] >= 1
    with pytest.raises(StorageFull, match="nothing was compacted"):
        e.compact()  # an operator's major compaction says why it does not run
    fs.capacity = 64 * MiB
    assert e._bg.maybe_compact() is True
    assert e.stats()["sstables"] == 1
    assert all(e.get(b"k%05d" % i) == VALUE for i in range(0, 2000, 7))
    e.close()


def _used(fs: MemFileSystem) -> int:
    return fs.capacity - fs.free_bytes("/db")

