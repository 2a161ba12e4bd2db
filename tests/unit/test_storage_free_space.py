"""The engine's free-space guard (docs/decisions.md D36): below ``storage.min_free_bytes``
writes are refused whole with StorageFull, reads go on, writes resume once space is freed,
and a compaction waits for room. The file system is the in-memory one whose capacity a
test sets (its ``free_bytes`` is capacity minus the live files), so the disk fills at a
known point; tests/integration/test_disk_full.py does the same on a real small file
system with a node process."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ringkv.config import KiB, MiB, StorageConfig
from ringkv.errors import StorageFull, from_wire
from ringkv.storage import Engine, commitlog_writer
from ringkv.storage import commitlog_format as clf
from ringkv.storage.engine import SPACE_CHECK_BYTES, SPACE_RECHECK_S
from ringkv.testing.cluster import wait_until
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



# -- the disk fills between two readings (D42): the commit log stalls, nothing is lost ----

async def _wait_for(fut, seconds: float = 5.0):
    return await asyncio.wait_for(asyncio.shield(fut), seconds)


async def test_a_full_disk_stalls_the_log_and_every_write_is_logged_once_there_is_room():
    """Another process fills the disk between two readings of the free space: the commit
    log's write fails with ENOSPC part-way. Before D42 that stopped the engine for good
    (every later write: Closed). Now the torn bytes are cut off, the writes wait
    unacknowledged, the guard refuses new ones, and once space is freed every waiting write
    is logged and acknowledged, without a restart; after a crash all of them are there and
    the log reads to its end (no torn record in the middle)."""
    fs, clock = MemFileSystem(), FakeClock()
    e = _open(fs, clock, min_free_bytes=64 * KiB, memtable_bytes=64 * MiB)
    for i in range(100):
        await e.aput(b"a%03d" % i, VALUE)  # acknowledged before the disk fills
    fs.enforce_capacity = True
    fs.capacity = _used(fs) + 2 * KiB  # the rest is taken by someone else, all at once
    futs = [e.aput_nowait(b"s%03d" % i, VALUE) for i in range(50)]  # ~6 KiB: does not fit
    await asyncio.sleep(0.05)  # the syncer's write-out fails
    assert e.stats()["commitlog_stalled"] is True and e.stats()["commitlog_stalls"] >= 1
    assert not any(f.done() for f in futs)  # not acknowledged, not failed: waiting
    assert e.get(b"s000") == VALUE  # applied (readable), as any write is before its fsync
    with pytest.raises(StorageFull):  # the stall sent the guard to read the free space again
        e.aput_nowait(b"refused", VALUE)
    assert e.get(b"refused") is None

    fs.capacity += 64 * MiB  # the operator frees space
    clock.advance(SPACE_RECHECK_S)
    for f in futs:
        await _wait_for(f)  # logged by the syncer's retry, then acknowledged
    assert e.stats()["commitlog_stalled"] is False
    await e.aput(b"after", VALUE)  # and new writes go on: no restart

    fs.crash()  # power loss: only what was synced survives
    e2 = _open(fs, clock, min_free_bytes=64 * KiB)
    assert all(e2.get(b"a%03d" % i) == VALUE for i in range(100))
    assert all(e2.get(b"s%03d" % i) == VALUE for i in range(50))
    assert e2.get(b"after") == VALUE and e2.get(b"refused") is None
    e2.close()


def test_a_blocking_writer_on_a_full_disk_waits_then_gets_storage_full_saying_why(monkeypatch):
    """The synchronous API: a put whose record cannot be logged waits for room (the syncer
    retries) and gives up after STALL_WAIT_S with a StorageFull that says the write is in
    memory and not durable; once there is room it is logged like the rest. A put while the
    log is stalled is refused whole at once, guard or no guard."""
    monkeypatch.setattr(commitlog_writer, "STALL_WAIT_S", 0.3)
    monkeypatch.setattr(commitlog_writer, "STALL_RETRY_S", 0.05)
    fs, clock = MemFileSystem(), FakeClock()
    e = _open(fs, clock, min_free_bytes=0, memtable_bytes=64 * MiB)  # no guard at all
    e.put(b"before", VALUE)
    fs.enforce_capacity = True
    fs.capacity = _used(fs) + 50
    with pytest.raises(StorageFull, match="waits in memory, readable but not durable"):
        e.put(b"stuck", VALUE)
    assert e.stats()["commitlog_stalled"] is True
    with pytest.raises(StorageFull, match="commit log is waiting for room .* nothing was written"):
        e.put(b"refused", VALUE)
    assert e.get(b"refused") is None and e.stats()["writes_refused"] == 1
    fs.capacity += 16 * MiB  # room: the syncer's next retry logs "stuck"
    wait_until(lambda: not e.stats()["commitlog_stalled"], time.monotonic() + 5, "the stall ends")
    e.put(b"next", VALUE)
    fs.crash()
    e2 = _open(fs, clock, min_free_bytes=0)
    assert [e2.get(k) for k in (b"before", b"stuck", b"next")] == [VALUE] * 3
    assert e2.get(b"refused") is None
    e2.close()


def test_a_writer_that_finds_the_disk_full_waits_and_finishes_once_there_is_room():
    """A blocking put that meets the full disk itself waits (unacknowledged) while the log
    retries, and returns once the operator frees space."""
    fs, clock = MemFileSystem(), FakeClock()
    e = _open(fs, clock, min_free_bytes=0, memtable_bytes=64 * MiB)
    e.put(b"before", VALUE)
    fs.enforce_capacity = True
    fs.capacity = _used(fs) + 50
    done = threading.Event()

    def blocked() -> None:
        e.put(b"waits", VALUE)
        done.set()

    threading.Thread(target=blocked, daemon=True).start()
    wait_until(lambda: e.stats()["commitlog_stalled"], time.monotonic() + 5, "the stall")
    assert not done.is_set()  # waiting for room
    fs.capacity += 16 * MiB
    assert done.wait(5), "the blocked put did not finish once there was room"
    assert e.stats()["commitlog_stalled"] is False
    fs.crash()
    e2 = _open(fs, clock, min_free_bytes=0)
    assert [e2.get(k) for k in (b"before", b"waits")] == [VALUE] * 2
    e2.close()


def test_closing_a_stalled_log_says_what_it_could_not_log(caplog):
    """Stopped while stalled, the log cannot keep its waiting records: it says how many
    (none was acknowledged), and a restart has every acknowledged write and none of them."""
    fs, clock = MemFileSystem(), FakeClock()
    e = _open(fs, clock, min_free_bytes=0, memtable_bytes=64 * MiB)
    e.put(b"before", VALUE)
    fs.enforce_capacity = True
    fs.capacity = _used(fs) + 50

    async def write() -> None:  # three writes that wait for room, unacknowledged
        for i in range(3):
            e.aput_nowait(b"w%d" % i, VALUE)
        await asyncio.sleep(0.05)

    asyncio.run(write())
    assert e.stats()["commitlog_stalled"] is True
    e.close()  # an operator stops the node before freeing space
    assert "commit log closed with 3 records not logged" in caplog.text
    fs.crash()
    fs.capacity += 16 * MiB  # room again before the restart
    e2 = _open(fs, clock, min_free_bytes=0)
    assert e2.get(b"before") == VALUE and e2.get(b"w0") is None
    e2.close()


def test_no_room_for_a_new_segment_keeps_the_log_on_the_current_one():
    """A memtable switch asks for a new segment; if its header does not fit, the log writes
    on to the old segment, leaves no headless segment behind, and rolls once there is room."""
    fs, clock = MemFileSystem(), FakeClock()
    e = _open(fs, clock, min_free_bytes=0, memtable_bytes=64 * MiB)
    e.put(b"k0", VALUE)
    segments = sorted(fs.listdir(e._log_dir))
    fs.enforce_capacity = True
    record = clf.FRAME.size + clf.PAYLOAD_HEAD.size + len(b"k1") + len(VALUE)
    fs.capacity = _used(fs) + record + clf.HEADER.size + 4 - 1  # the record, not a header too
    e._log.request_roll()
    e.put(b"k1", VALUE)  # written to the old segment; the roll fails and is put off
    assert sorted(fs.listdir(e._log_dir)) == segments
    assert e.stats()["commitlog_stalls"] == 1 and e.stats()["commitlog_stalled"] is False
    fs.capacity += MiB
    e.put(b"k2", VALUE)
    assert len(fs.listdir(e._log_dir)) == len(segments) + 1  # rolled at last
    fs.crash()
    e2 = _open(fs, clock, min_free_bytes=0)
    assert [e2.get(b"k%d" % i) for i in range(3)] == [VALUE] * 3
    e2.close()


def test_a_segment_left_half_preallocated_is_removed_before_the_replay_needs_its_room():
    """A crash while the next segment was being zero-filled (D43) leaves next-segment.tmp,
    which holds no records. The open removes it before the replay, so on a disk it filled
    the replay's flush has that room: the node starts with every write, instead of
    failing with ENOSPC until the operator finds and deletes a file that is not theirs."""
    fs, clock = MemFileSystem(), FakeClock()
    e = _open(fs, clock, min_free_bytes=0, memtable_bytes=64 * MiB, sync_mode="batch")
    for i in range(2000):  # ~250 KiB, all in the commit log
        e.put(b"k%05d" % i, VALUE)
    log_dir = e._log_dir
    e._closed = True  # the process dies: no flush, no close
    e._bg.stop()
    e._log._stop = True
    e._log._wake.set()
    e._log._thread.join()
    if e._log._prep_thread is not None:
        e._log._prep_thread.join()
    prepared = fs.open_write(f"{log_dir}/{clf.PREPARED_NAME}")  # as the prep thread left it
    prepared.write(bytes(4 * MiB))
    prepared.sync()
    fs.sync_dir(log_dir)
    fs.crash()
    fs.enforce_capacity = True
    fs.capacity = _used(fs) + 64 * KiB  # the replay's table (~250 KiB) fits only without it
    e2 = _open(fs, clock, min_free_bytes=0)
    assert not fs.exists(f"{log_dir}/{clf.PREPARED_NAME}")
    assert all(e2.get(b"k%05d" % i) == VALUE for i in range(2000))
    e2.close()
