"""Engine behaviour through its public API: write/read paths, deletes, TTL, merge mode,
flush/compaction/restart safety, scans, counters, async API."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from ringkv.config import StorageConfig
from ringkv.errors import Closed, InvalidRequest
from ringkv.storage import Engine
from ringkv.testing.fake_clock import FakeClock

SMALL = StorageConfig(sync_mode="off", memtable_bytes=16 * 1024, block_bytes=512,
                      compaction_min_threshold=3)


def union_merge(older: bytes, newer: bytes) -> bytes:
    items = set(older.split(b",")) | set(newer.split(b","))
    return b",".join(sorted(i for i in items if i))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def open_engine(path, cfg=SMALL, **kw) -> Engine:
    return Engine.open(str(path), cfg, **kw)


def test_put_get_delete_roundtrip(tmp_path):
    with open_engine(tmp_path) as e:
        e.put(b"a", b"1")
        e.put(b"b", b"2")
        e.put(b"a", b"3")
        e.delete(b"b")
        assert e.get(b"a") == b"3"
        assert e.get(b"b") is None
        assert e.get(b"c") is None


def test_reads_agree_across_flush_and_restart(tmp_path):
    expect = {}
    with open_engine(tmp_path) as e:
        for i in range(3000):
            k = b"key%05d" % (i % 1700)
            if i % 7 == 0:
                e.delete(k)
                expect.pop(k, None)
            else:
                e.put(k, b"v%d" % i)
                expect[k] = b"v%d" % i
        assert e.stats()["flushes"] > 0  # small memtable: several flushes happened
        all_keys = [b"key%05d" % j for j in range(1700)]
        for k in all_keys:
            assert e.get(k) == expect.get(k)
        assert e.get_many(all_keys) == [expect.get(k) for k in all_keys]
    with open_engine(tmp_path) as e:
        for k in all_keys:
            assert e.get(k) == expect.get(k)
        assert e.get_many(all_keys + [b"nokey"]) == [expect.get(k) for k in all_keys] + [None]
        assert list(e.scan()) == sorted(expect.items())


def test_deleted_key_not_resurrected_by_flush_compaction_or_restart(tmp_path, clock):
    cfg = StorageConfig(sync_mode="off", memtable_bytes=1 << 20, gc_grace_seconds=100.0)
    with open_engine(tmp_path, cfg, clock=clock) as e:
        e.put(b"k", b"old")
        e.flush()  # old value in an older SSTable
        e.delete(b"k")
        e.flush()
        assert e.get(b"k") is None
        clock.advance(1000)  # past gc_grace
        e.put(b"other", b"x")
        e.flush()
        # a compaction of only the newest tables must keep the tombstone (older table has k)
        e._bg.compact_range(0, 2)
        assert e.get(b"k") is None
    with open_engine(tmp_path, cfg, clock=clock) as e:
        assert e.get(b"k") is None
        e.compact()  # all tables: now the tombstone may go, and the old value with it
        assert e.get(b"k") is None
        assert e.stats()["sstable_entries"] == 1
    with open_engine(tmp_path, cfg, clock=clock) as e:
        assert e.get(b"k") is None
        assert e.get(b"other") == b"x"


def test_tombstone_kept_until_gc_grace(tmp_path, clock):
    cfg = StorageConfig(sync_mode="off", gc_grace_seconds=100.0)
    with open_engine(tmp_path, cfg, clock=clock) as e:
        e.put(b"k", b"v")
        e.delete(b"k")
        e.compact()
        assert e.stats()["sstable_entries"] == 1  # tombstone still there
        clock.advance(101)
        e.compact()
        assert e.stats()["sstable_entries"] == 0
        assert e.get(b"k") is None


def test_ttl_expires_and_becomes_droppable(tmp_path, clock):
    cfg = StorageConfig(sync_mode="off", gc_grace_seconds=10.0)
    with open_engine(tmp_path, cfg, clock=clock) as e:
        e.put(b"t", b"v", ttl=5)
        e.put(b"p", b"v")
        assert e.get(b"t") == b"v"
        clock.advance(6)
        assert e.get(b"t") is None
        assert dict(e.scan()) == {b"p": b"v"}
        e.compact()
        assert e.get(b"t") is None and e.stats()["sstable_entries"] == 2
        clock.advance(20)
        e.compact()
        assert e.stats()["sstable_entries"] == 1
    with open_engine(tmp_path, cfg, clock=clock) as e:
        assert e.get(b"t") is None


def test_merge_mode_merges_everywhere(tmp_path):
    with open_engine(tmp_path, merge=union_merge) as e:
        e.put(b"s", b"a")
        e.flush()
        e.put(b"s", b"b")
        assert e.get(b"s") == b"a,b"  # memtable operand merged with SSTable
        e.flush()
        e.put(b"s", b"c")
        assert e.get(b"s") == b"a,b,c"
        assert e.get_many([b"s", b"t", b"s"]) == [b"a,b,c", None, b"a,b,c"]
        e.compact()
        assert e.get(b"s") == b"a,b,c"
        e.delete(b"s")
        e.put(b"s", b"d")  # after a delete only the new operand counts
        assert e.get(b"s") == b"d"
        e.flush()
        assert e.get(b"s") == b"d"
        assert list(e.scan()) == [(b"s", b"d")]
    with open_engine(tmp_path, merge=union_merge) as e:
        assert e.get(b"s") == b"d"
        e.put(b"s", b"e")
    with open_engine(tmp_path, merge=union_merge) as e:  # replayed operand merges too
        assert e.get(b"s") == b"d,e"
        with pytest.raises(InvalidRequest):
            e.put(b"x", b"y", ttl=1)


def test_purgeable_drops_only_when_safe(tmp_path, clock):
    def purgeable(value: bytes, now: float) -> bool:
        return value == b"dead"

    cfg = StorageConfig(sync_mode="off", compaction="none")
    with open_engine(tmp_path, cfg, merge=union_merge, purgeable=purgeable, clock=clock) as e:
        e.put(b"k", b"dead")
        e.flush()
        e.put(b"k", b"dead")
        e.put(b"j", b"live")
        e.flush()
        e._bg.compact_range(0, 1)  # an older table holds k: must keep it
        assert e.stats()["sstable_entries"] == 3
        assert e.get(b"k") == b"dead"
        e.compact()  # includes the oldest table: now safe
        assert e.stats()["sstable_entries"] == 1
        assert e.get(b"k") is None and e.get(b"j") == b"live"


def test_missing_key_touches_no_data_block(tmp_path):
    cfg = StorageConfig(sync_mode="off", compaction="none")
    with open_engine(tmp_path, cfg) as e:
        for t in range(4):
            for i in range(2000):
                e.put(b"key-%d-%05d" % (t, i), b"v" * 20)
            e.flush()
        before = e.stats()
        misses = [b"key-%d-%05d" % (t, i) + b"x" for t in range(4) for i in range(0, 2000, 8)]
        for k in misses:
            assert e.get(k) is None
        after = e.stats()
        blocks = (after["blocks_read"] + after["block_cache_hits"]) - (before["blocks_read"] + before["block_cache_hits"])
        # common case: bloom says no, no block is read; ~1% false positives may read one
        assert blocks <= 0.03 * len(misses)
        assert after["bloom_negatives"] - before["bloom_negatives"] >= 0.97 * len(misses)
        assert after["sstables_per_read"] < 0.1


def test_present_key_reads_one_table(tmp_path):
    cfg = StorageConfig(sync_mode="off", compaction="none")
    with open_engine(tmp_path, cfg) as e:
        for t in range(3):
            for i in range(500):
                e.put(b"k%d-%04d" % (t, i), b"v")
            e.flush()
        for i in range(500):
            assert e.get(b"k0-%04d" % i) == b"v"
        assert 1.0 <= e.stats()["sstables_per_read"] < 1.05


def test_scan_is_ordered_bounded_and_snapshot_consistent(tmp_path):
    with open_engine(tmp_path) as e:
        for i in range(2000):
            e.put(b"k%05d" % i, b"v1")
        e.flush()
        it = e.scan(b"k00100", b"k01900")
        first = next(it)
        # writes, deletes, flushes and a compaction while the scan is open
        for i in range(2000):
            e.put(b"k%05d" % i, b"v2")
        e.delete(b"k00500")
        e.put(b"k00150x", b"new")
        e.compact()
        rest = list(it)
        got = [first] + rest
        assert [k for k, _ in got] == [b"k%05d" % i for i in range(100, 1900)]
        assert {v for _, v in got} == {b"v1"}
        assert e.get(b"k00500") is None
        assert dict(e.scan(b"k00150", b"k00151"))[b"k00150x"] == b"new"


def test_compaction_deletes_input_files_after_scans_release_them(tmp_path):
    with open_engine(tmp_path, StorageConfig(sync_mode="off", compaction="none")) as e:
        for t in range(3):
            e.put(b"k%d" % t, b"v")
            e.flush()
        files_before = set(os.listdir(tmp_path / "sstables"))
        it = e.scan()
        e.compact()
        assert files_before <= set(os.listdir(tmp_path / "sstables"))  # held by the scan
        assert len(list(it)) == 3
        it.close()
        assert not files_before & set(os.listdir(tmp_path / "sstables"))


def test_size_tiered_compaction_runs_in_background(tmp_path):
    with open_engine(tmp_path) as e:
        for i in range(6000):
            e.put(b"k%05d" % (i % 500), b"v%d" % i)
        e.flush()
        e._bg.maybe_compact()  # whatever the background thread has not done yet
        st = e.stats()
        assert st["compactions"] >= 1
        assert st["sstables"] < st["flushes"]
        assert st["space_amplification"] >= 1.0
        for i in range(500):
            assert e.get(b"k%05d" % i) == b"v%d" % (5500 + i)


def test_commit_log_segments_deleted_once_flushed(tmp_path):
    cfg = StorageConfig(sync_mode="batch", memtable_bytes=4096)
    with open_engine(tmp_path, cfg) as e:
        for i in range(300):
            e.put(b"k%04d" % i, b"v" * 40)
        e.flush()
        e.put(b"last", b"1")  # its write-out starts a fresh segment after the switch
        e.flush()
        segments = os.listdir(tmp_path / "commitlog")
        assert len(segments) == 1, segments
        assert e.stats()["flushes"] > 5
    with open_engine(tmp_path, cfg) as e:
        assert e.get(b"k0299") == b"v" * 40 and e.get(b"last") == b"1"


def test_reads_never_go_back_in_time_during_flushes_and_compactions(tmp_path):
    cfg = StorageConfig(sync_mode="off", memtable_bytes=2048, block_bytes=256,
                        compaction_min_threshold=2)
    keys = [b"key%02d" % i for i in range(40)]
    with open_engine(tmp_path, cfg) as e:
        for k in keys:
            e.put(k, b"%08d" % 0)
        done = threading.Event()
        errors: list[str] = []

        def writer() -> None:
            for n in range(1, 4001):
                e.put(keys[n % len(keys)], b"%08d" % n)
            done.set()

        def reader() -> None:
            seen = {k: 0 for k in keys}
            while not done.is_set():
                for k in keys:
                    n = int(e.get(k))
                    if n < seen[k]:
                        errors.append(f"{k!r} went back from {seen[k]} to {n}")
                    seen[k] = n
                for k, v in zip(keys, e.get_many(keys)):  # one view for all of them
                    if int(v) < seen[k]:
                        errors.append(f"get_many: {k!r} went back from {seen[k]} to {int(v)}")
                    seen[k] = int(v)
                got = [k for k, _ in e.scan()]
                if got != keys:
                    errors.append("scan lost or reordered keys")

        threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
        st = e.stats()
        assert st["flushes"] > 10 and st["compactions"] > 0


def test_orphans_removed_at_open(tmp_path):
    with open_engine(tmp_path) as e:
        e.put(b"a", b"1")
        e.flush()
    (tmp_path / "sstables" / "0000000000000999.sst").write_bytes(b"partial")
    (tmp_path / "MANIFEST.tmp").write_bytes(b"partial")
    with open_engine(tmp_path) as e:
        assert e.get(b"a") == b"1"
    assert not (tmp_path / "sstables" / "0000000000000999.sst").exists()
    assert not (tmp_path / "MANIFEST.tmp").exists()


def test_closed_engine_raises_closed(tmp_path):
    e = open_engine(tmp_path)
    e.close()
    e.close()  # idempotent
    for call in (lambda: e.put(b"a", b"b"), lambda: e.get(b"a"), lambda: e.delete(b"a"),
                 lambda: e.scan(), lambda: e.flush()):
        with pytest.raises(Closed):
            call()


def test_close_while_batch_writers_run(tmp_path):
    e = open_engine(tmp_path, StorageConfig(sync_mode="batch", memtable_bytes=8192))
    acked: dict[int, list[bytes]] = {n: [] for n in range(8)}
    started = threading.Barrier(9)
    enough = threading.Event()

    def writer(n: int) -> None:
        started.wait()
        for i in range(100000):
            try:
                e.put(b"%d-%d" % (n, i), b"v")
            except Closed:
                return
            acked[n].append(b"%d-%d" % (n, i))
            if i == 25:
                enough.set()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    started.wait()
    assert enough.wait(30)
    e.close()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    with open_engine(tmp_path) as e:
        assert all(e.get(k) == b"v" for keys in acked.values() for k in keys)


def test_second_open_of_same_directory_is_refused(tmp_path):
    from ringkv.errors import ConfigError

    with open_engine(tmp_path) as first:
        with pytest.raises(ConfigError, match="already open"):
            open_engine(tmp_path)
        first.put(b"k", b"v")  # the first engine is unharmed
        assert first.get(b"k") == b"v"


def test_batch_mode_group_commit_counts(tmp_path):
    with open_engine(tmp_path, StorageConfig(sync_mode="batch")) as e:
        def writer(n: int) -> None:
            for i in range(40):
                e.put(b"%d-%d" % (n, i), b"v")
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        st = e.stats()
        assert st["writes_synced"] == 640
        assert st["fsyncs"] >= 1 and st["writes_per_fsync"] > 1.0
    with open_engine(tmp_path) as e:
        assert sum(1 for _ in e.scan()) == 640


def test_periodic_mode_syncs_in_background(tmp_path):
    cfg = StorageConfig(sync_mode="periodic", sync_period_ms=1)
    with open_engine(tmp_path, cfg) as e:
        e.put(b"a", b"1")
        e._log.sync()
        assert e.stats()["fsyncs"] >= 1
    with open_engine(tmp_path, cfg) as e:
        assert e.get(b"a") == b"1"


def test_backpressure_stalls_writers_only_when_flushes_pile_up(tmp_path):
    cfg = StorageConfig(sync_mode="off", memtable_bytes=2048, max_pending_flushes=2)
    with open_engine(tmp_path, cfg) as e:
        stalled = threading.Event()
        original = e._bg.wait_for_room

        def wait_for_room() -> None:
            stalled.set()
            original()

        e._bg.wait_for_room = wait_for_room
        e._bg._manifest_mutex.acquire()  # the flusher cannot finish while we hold this
        done = threading.Event()

        def writer() -> None:
            for i in range(200):
                e.put(b"k%05d" % i, b"v" * 50)
            done.set()

        t = threading.Thread(target=writer)
        t.start()
        assert stalled.wait(10)
        assert not done.is_set()
        assert e.stats()["immutable_memtables"] == cfg.max_pending_flushes + 1
        e._bg._manifest_mutex.release()
        t.join(30)
        assert done.is_set()
        st = e.stats()
        assert st["write_stalls"] >= 1 and st["flushes"] >= 3
        assert e.get(b"k00000") == b"v" * 50


def test_async_api(tmp_path, monkeypatch):
    from ringkv.storage import fs as fs_module

    sync_threads = set()
    original_sync = fs_module.WritableFile.sync

    def recording_sync(self) -> None:
        sync_threads.add(threading.get_ident())
        original_sync(self)

    monkeypatch.setattr(fs_module.WritableFile, "sync", recording_sync)

    async def main(e: Engine) -> None:
        loop_thread = threading.get_ident()
        sync_threads.clear()  # Engine.open ran on this thread before the loop started
        await asyncio.gather(*(e.aput(b"k%d" % i, b"v%d" % i) for i in range(50)))
        await e.adelete(b"k3")
        assert await e.aget(b"k1") == b"v1"
        assert await e.aget(b"k3") is None
        e.flush()
        assert await e.aget(b"k2") == b"v2"
        await e.aput(b"t", b"x", ttl=100)
        assert await e.aget(b"t") == b"x"
        assert loop_thread not in sync_threads  # no fsync on the loop
        if e.stats()["fsync_thread"] == "python":  # the native thread's fsyncs are in C (D30)
            assert sync_threads

    with open_engine(tmp_path, StorageConfig(sync_mode="batch", inline_sync_min_records=0)) as e:
        asyncio.run(main(e))
        assert e.stats()["writes_synced"] >= 51
    with open_engine(tmp_path) as e:
        assert e.get(b"k49") == b"v49" and e.get(b"k3") is None


def test_a_big_turn_fsyncs_on_the_loop_a_small_one_on_the_syncer(tmp_path, monkeypatch):
    from ringkv.storage import fs as fs_module

    sync_threads: list[int] = []
    original_sync = fs_module.WritableFile.sync

    def recording_sync(self) -> None:
        sync_threads.append(threading.get_ident())
        original_sync(self)

    monkeypatch.setattr(fs_module.WritableFile, "sync", recording_sync)

    async def turn(e: Engine, prefix: bytes, count: int) -> set[int]:
        sync_threads.clear()
        futs = [e.aput_nowait(prefix + b"%d" % i, b"v") for i in range(count)]  # one turn
        await asyncio.gather(*futs)
        return set(sync_threads)

    async def main(e: Engine) -> None:
        loop_thread = threading.get_ident()
        assert await turn(e, b"big", 100) == {loop_thread}
        assert e.stats()["inline_syncs"] == 1
        assert loop_thread not in await turn(e, b"small", 10)
        assert e.stats()["inline_syncs"] == 1

    with open_engine(tmp_path, StorageConfig(sync_mode="batch", inline_sync_min_records=64)) as e:
        asyncio.run(main(e))
        assert e.stats()["writes_synced"] == 110
    with open_engine(tmp_path) as e:  # both turns' writes are on disk
        assert e.get(b"big99") == b"v" and e.get(b"small9") == b"v"


def test_zlib_compression(tmp_path):
    cfg = StorageConfig(sync_mode="off", compression="zlib")
    with open_engine(tmp_path, cfg) as e:
        for i in range(1000):
            e.put(b"k%04d" % i, b"value" * 20)
        e.flush()
        assert e.stats()["sstable_bytes"] < 1000 * 100
        assert e.get(b"k0500") == b"value" * 20



def test_checkpoint_opens_as_an_engine_with_every_write_before_it(tmp_path):
    """Hard links on the real file system; later writes, compactions and the source's
    deletion of its tables leave the checkpoint as it was."""
    with open_engine(tmp_path / "db") as e:
        for i in range(600):  # several flushes: many tables
            e.put(b"k%04d" % i, b"v%d" % i)
        e.delete(b"k0007")
        held = e.checkpoint(str(tmp_path / "snap"))
        assert held["tables"] >= 1 and held["bytes"] > 0
        e.put(b"k0001", b"later")
        e.compact()  # the source's tables are replaced and unlinked
        with pytest.raises(InvalidRequest, match="exists already"):
            e.checkpoint(str(tmp_path / "snap"))
    with open_engine(tmp_path / "snap") as snap:
        assert snap.get(b"k0001") == b"v1" and snap.get(b"k0007") is None
        assert sum(1 for _ in snap.scan()) == 599
        snap.put(b"k0001", b"restored")  # a checkpoint is a working engine
    with open_engine(tmp_path / "snap") as snap:
        assert snap.get(b"k0001") == b"restored"


def test_checkpoint_copies_where_the_file_system_has_no_links():
    from ringkv.testing.fs import MemFileSystem

    fs = MemFileSystem()
    with Engine.open("/db", SMALL, fs=fs) as e:
        for i in range(300):
            e.put(b"k%04d" % i, b"v%d" % i)
        e.checkpoint("/snap")
    with Engine.open("/snap", SMALL, fs=fs) as snap:
        assert sum(1 for _ in snap.scan()) == 300
