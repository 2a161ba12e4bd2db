"""Commit log writer and reader: round trip, segment rolling and release, group commit."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from ringkv.errors import Corruption
from ringkv.storage import commitlog_format as fmt
from ringkv.storage.commitlog_reader import BLOCK, read_segment
from ringkv.storage.commitlog_writer import PREPARED_NAME, CommitLogWriter
from ringkv.storage.fs import OsFileSystem
from ringkv.testing.fs import MemFileSystem


def make_writer(path, mode="off", segment_bytes=1 << 20, start_seq=0, lock=None) -> CommitLogWriter:
    return CommitLogWriter(OsFileSystem(), str(path), 1, start_seq, mode, 10, segment_bytes,
                           lock or threading.Lock())


def read_all(path):
    fs = OsFileSystem()
    out = []
    for name in sorted(os.listdir(path)):
        out += list(read_segment(fs, os.path.join(path, name)))
    return out


def test_round_trip_all_kinds(tmp_path):
    w = make_writer(tmp_path)
    with w.lock:
        w.append(1, fmt.KIND_PUT, b"k1", b"v1")
        w.append(2, fmt.KIND_DELETE, b"k2", fmt.F64.pack(12.5))
        w.append(3, fmt.KIND_PUT_TTL, b"", fmt.F64.pack(99.0) + b"")
    w.close()
    assert read_all(tmp_path) == [(1, 1, b"k1", b"v1"), (2, 2, b"k2", fmt.F64.pack(12.5)),
                                  (3, 3, b"", fmt.F64.pack(99.0))]


def test_segments_roll_and_are_released(tmp_path):
    w = make_writer(tmp_path, mode="batch", segment_bytes=200)
    for seq in range(1, 41):
        with w.lock:
            w.append(seq, fmt.KIND_PUT, b"key%d" % seq, b"x" * 20)
        w.wait_synced(seq)
    assert len(os.listdir(tmp_path)) > 3
    assert [r[0] for r in read_all(tmp_path)] == list(range(1, 41))
    w.release_upto(20)
    remaining = [r[0] for r in read_all(tmp_path)]
    assert remaining[0] <= 21 and remaining[-1] == 40
    assert all(s > 20 for s in remaining) or remaining[0] > 15  # only whole segments go
    w.close()


def test_request_roll_starts_new_segment(tmp_path):
    w = make_writer(tmp_path, mode="batch")
    with w.lock:
        w.append(1, fmt.KIND_PUT, b"a", b"1")
        w.request_roll()
    w.wait_synced(1)
    with w.lock:
        w.append(2, fmt.KIND_PUT, b"b", b"2")
    w.wait_synced(2)
    w.close()
    assert len(os.listdir(tmp_path)) == 2


def test_group_commit_shares_fsyncs(tmp_path):
    w = make_writer(tmp_path, mode="batch")
    seq = [0]

    def writer() -> None:
        for _ in range(50):
            with w.lock:
                seq[0] += 1
                s = seq[0]
                w.append(s, fmt.KIND_PUT, b"k", b"v")
            w.wait_synced(s)
            assert w.synced_seq >= s

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.writes_synced == 400
    assert w.fsyncs < 400
    w.close()
    assert len(read_all(tmp_path)) == 400


def test_unsynced_mode_writes_on_close(tmp_path):
    w = make_writer(tmp_path, mode="off")
    with w.lock:
        for s in range(1, 101):
            w.append(s, fmt.KIND_PUT, b"k%d" % s, b"v")
    w.close()
    assert w.fsyncs == 1  # close always syncs
    assert len(read_all(tmp_path)) == 100


def _async_puts(w: CommitLogWriter, batches: list[int], start_seq: int = 1) -> list[tuple[int, int, float]]:
    """Async batch writes: each batch added in one event-loop turn, the next batch once the
    previous one is acknowledged. Returns (seq, synced_seq seen at completion, seconds
    the batch took) per write."""
    import asyncio
    import time

    async def run() -> list[tuple[int, int, float]]:
        loop = asyncio.get_running_loop()
        seen, s = [], start_seq
        for n in batches:
            t0, futs = time.monotonic(), []
            for _ in range(n):
                with w.lock:
                    w.append(s, fmt.KIND_PUT, b"k", b"v")
                fut = loop.create_future()
                w.add_waiter(s, loop, fut)
                futs.append((s, fut))
                s += 1
            for seq, fut in futs:
                await asyncio.wait_for(fut, 10)
                seen.append((seq, w.synced_seq, time.monotonic() - t0))
        return seen

    return asyncio.run(run())


def _batch_writer(path, window_us: int, min_writes: int = 1) -> CommitLogWriter:
    return CommitLogWriter(OsFileSystem(), str(path), 1, 0, "batch", 10, 1 << 20,
                           threading.Lock(), group_commit_window_us=window_us,
                           group_commit_min_writes=min_writes)


def test_group_commit_window_spaces_fsyncs_and_keeps_durability(tmp_path):
    # 20 sequential writes against a 50 ms window: each group commit starts >= 50 ms after
    # the previous one ended, and every write is acknowledged only once fsynced
    import time
    w = _batch_writer(tmp_path, 50_000)
    t0 = time.monotonic()
    seen = _async_puts(w, [1] * 20)
    assert all(synced >= s for s, synced, _ in seen)
    assert time.monotonic() - t0 >= 19 * 0.05
    assert w.fsyncs == 20 and w.writes_synced == 20
    w.close()
    assert len(read_all(tmp_path)) == 20


def test_group_commit_window_gathers_writes_into_one_fsync(tmp_path):
    # writes trickling in (one per event-loop turn, ~1 ms apart) during the window share
    # the next fsync
    import asyncio
    w = _batch_writer(tmp_path, 200_000)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        futs = []
        for s in range(1, 51):
            with w.lock:
                w.append(s, fmt.KIND_PUT, b"k", b"v")
            fut = loop.create_future()
            w.add_waiter(s, loop, fut)
            futs.append((s, fut))
            await asyncio.sleep(0.001)
        for s, fut in futs:
            await asyncio.wait_for(fut, 10)
            assert w.synced_seq >= s

    asyncio.run(run())
    assert w.writes_synced == 50 and w.fsyncs <= 3
    w.close()


def test_group_commit_window_does_not_delay_a_write_after_idle(tmp_path):
    import time
    w = _batch_writer(tmp_path, 300_000)
    time.sleep(0.35)
    t0 = time.monotonic()
    _async_puts(w, [1])
    assert time.monotonic() - t0 < 0.15
    w.close()


def test_group_commit_window_zero_never_waits(tmp_path):
    import time
    w = _batch_writer(tmp_path, 0)
    t0 = time.monotonic()
    seen = _async_puts(w, [1] * 20)
    assert all(synced >= s for s, synced, _ in seen)
    assert time.monotonic() - t0 < 0.5
    w.close()


def test_group_commit_window_spares_a_sequential_writer_below_min_writes(tmp_path):
    # the same 20 sequential writes and a 50 ms window, but only 1 write waits at a time:
    # below group_commit_min_writes, each is synced at once (20 windows would be 1 s)
    import time
    w = _batch_writer(tmp_path, 50_000, min_writes=8)
    t0 = time.monotonic()
    seen = _async_puts(w, [1] * 20)
    assert all(synced >= s for s, synced, _ in seen)
    assert time.monotonic() - t0 < 0.5
    assert w.fsyncs == 20
    w.close()


def test_group_commit_window_applies_to_a_burst_of_min_writes(tmp_path):
    # one write, then at once a burst of 10 (>= min_writes 8): the burst's group commit
    # starts a window after the first one ended, and covers all 10 with one fsync
    import asyncio
    import time
    w = _batch_writer(tmp_path, 200_000, min_writes=8)

    async def run() -> float:
        loop = asyncio.get_running_loop()

        def put(s: int) -> asyncio.Future:
            with w.lock:
                w.append(s, fmt.KIND_PUT, b"k", b"v")
            fut = loop.create_future()
            w.add_waiter(s, loop, fut)
            return fut

        await asyncio.wait_for(put(1), 10)
        t0 = time.monotonic()
        burst = [put(s) for s in range(2, 12)]
        await asyncio.wait_for(asyncio.gather(*burst), 10)
        assert w.synced_seq >= 11
        return time.monotonic() - t0

    waited = asyncio.run(run())
    assert waited >= 0.15
    assert w.fsyncs == 2 and w.writes_synced == 11
    w.close()
    assert len(read_all(tmp_path)) == 11


# -- preallocated segments (D43) ---------------------------------------------------------
SEG = 64 * 1024


def _prealloc_writer(path, fs=None, segment_bytes=SEG) -> CommitLogWriter:
    return CommitLogWriter(fs or OsFileSystem(), str(path), 1, 0, "batch", 10, segment_bytes,
                           threading.Lock(), preallocate=True)


def _put_until(w: CommitLogWriter, start: int, stop: int, value: bytes = b"v" * 100) -> None:
    for seq in range(start, stop):
        with w.lock:
            w.append(seq, fmt.KIND_PUT, b"key%d" % seq, value)
        w.wait_synced(seq)


def _segments(path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n != PREPARED_NAME)


def test_segments_roll_onto_preallocated_files(tmp_path):
    """Once the first segment is 1/8 full the next one is prepared in the background; the
    log rolls onto it, and from then on every segment was written full of zeros first (its
    file is segment_bytes long before it is used). Everything replays in order."""
    w = _prealloc_writer(tmp_path)
    _put_until(w, 1, 2001)  # about 240 KB of records: several segments
    w.close()
    names = _segments(tmp_path)
    assert PREPARED_NAME not in os.listdir(tmp_path)  # close removes a prepared file
    assert len(names) >= 4
    sizes = [os.path.getsize(tmp_path / n) for n in names]
    assert sizes[0] < SEG  # the first was appended to: rolled from once the next was ready
    assert all(s >= SEG for s in sizes[1:-1]), sizes  # zero-filled, then written over
    assert [r[0] for r in read_all(tmp_path)] == list(range(1, 2001))


def test_preallocation_off_appends_as_before(tmp_path):
    w = CommitLogWriter(OsFileSystem(), str(tmp_path), 1, 0, "batch", 10, SEG,
                        threading.Lock(), preallocate=False)
    _put_until(w, 1, 2001)
    w.close()
    names = os.listdir(tmp_path)
    assert PREPARED_NAME not in names
    # appended segments: none ends in zeros (none was zero-filled before use)
    assert [r[0] for r in read_all(tmp_path)] == list(range(1, 2001))
    for n in names:
        data = (tmp_path / n).read_bytes()
        assert data.rstrip(b"\0") == data


def test_stale_prepared_file_is_removed_at_open(tmp_path):
    """A crash while the next segment was being zero-filled leaves next-segment.tmp: it is
    not a segment (never replayed) and the next open removes it."""
    (tmp_path / PREPARED_NAME).write_bytes(b"\0" * 5000 + b"junk")
    w = _prealloc_writer(tmp_path)
    assert PREPARED_NAME not in os.listdir(tmp_path)
    _put_until(w, 1, 11)
    w.close()
    assert [r[0] for r in read_all(tmp_path)] == list(range(1, 11))


class _NoRoomToPreallocate(OsFileSystem):
    def __init__(self) -> None:
        self.tries = 0

    def open_preallocated(self, path, size, stop):
        self.tries += 1
        raise OSError(errno.ENOSPC, "No space left on device (injected)", path)


def test_no_room_to_preallocate_falls_back_to_appending(tmp_path):
    """ENOSPC while preparing is not an error of the log: segments are appended to as
    before, and preparing is tried again once per roll, not at every write-out."""
    fs = _NoRoomToPreallocate()
    w = _prealloc_writer(tmp_path, fs=fs)
    _put_until(w, 1, 2001)
    w.close()
    names = _segments(tmp_path)
    assert len(names) >= 3
    assert 1 <= fs.tries <= len(names)
    assert [r[0] for r in read_all(tmp_path)] == list(range(1, 2001))


class _LittleFreeSpace(OsFileSystem):
    """A disk with ``free`` bytes free whatever is written (preparing is counted)."""

    def __init__(self, free: int) -> None:
        self.free, self.tries = free, 0

    def free_bytes(self, path):
        return self.free

    def open_preallocated(self, path, size, stop):
        self.tries += 1
        return super().open_preallocated(path, size, stop)


@pytest.mark.parametrize("keep_free", [0, 10 * SEG])
def test_the_next_segment_is_prepared_only_with_room_to_spare(tmp_path, keep_free):
    """Zero-filling a segment on a nearly full disk would take the room the log's own
    writes need (they would stall on ENOSPC, D42) and push the free space under the
    engine's floor (D36). So preparing starts only with 2 x segment_bytes plus that floor
    free; below it the log appends, as without preallocation."""
    (tmp_path / "tight").mkdir()
    (tmp_path / "roomy").mkdir()
    tight = _LittleFreeSpace(2 * SEG + keep_free - 1)
    w = CommitLogWriter(tight, str(tmp_path / "tight"), 1, 0, "batch", 10, SEG, threading.Lock(),
                        preallocate=True, keep_free_bytes=keep_free)
    _put_until(w, 1, 2001)
    w.close()
    assert len(_segments(tmp_path / "tight")) >= 3 and tight.tries == 0
    assert w.preallocated_segments == 0
    roomy = _LittleFreeSpace(2 * SEG + keep_free)
    w = CommitLogWriter(roomy, str(tmp_path / "roomy"), 1, 0, "batch", 10, SEG, threading.Lock(),
                        preallocate=True, keep_free_bytes=keep_free)
    _put_until(w, 1, 2001)
    w.close()
    assert roomy.tries >= 1 and w.preallocated_segments >= 1
    assert [r[0] for r in read_all(tmp_path / "roomy")] == list(range(1, 2001))


def test_no_preallocation_without_fsyncs(tmp_path):
    """`off` never fsyncs, and a cheaper fsync is all preallocation buys: there it would
    only write each segment twice, so the log appends as without it."""
    fs = _LittleFreeSpace(1 << 40)
    w = CommitLogWriter(fs, str(tmp_path), 1, 0, "off", 10, SEG, threading.Lock(),
                        preallocate=True)
    _put_until(w, 1, 2001)
    w.close()
    assert len(_segments(tmp_path)) >= 3 and fs.tries == 0 and w.preallocated_segments == 0
    assert [r[0] for r in read_all(tmp_path)] == list(range(1, 2001))


def _preallocated_log_with_records(tmp_path) -> tuple[str, int]:
    """A log whose current segment is a preallocated one holding records, then zeros; the
    writer "crashes" (no close). Returns the segment's path and the last seq written."""
    w = _prealloc_writer(tmp_path)
    seq = 1
    while len(_segments(tmp_path)) < 2:  # the roll onto the prepared file (bounded)
        assert seq < 5000, "the log never rolled onto a preallocated segment"
        _put_until(w, seq, seq + 50)
        seq += 50
    _put_until(w, seq, seq + 20)
    w._stop = True  # "crash": no close, nothing more written (the prepared file may stay)
    w._wake.set()
    w._thread.join()
    return str(tmp_path / _segments(tmp_path)[1]), seq + 19


def test_torn_record_before_zeros_is_a_torn_tail(tmp_path, caplog):
    """kill -9 in the middle of a write into a preallocated segment leaves a record cut
    short with zeros after it: a torn tail (replayed up to it), not corruption."""
    path, last = _preallocated_log_with_records(tmp_path)
    fs = OsFileSystem()
    whole = [r[0] for r in read_segment(fs, path)]
    assert whole[-1] == last and len(whole) >= 20
    data = bytearray(open(path, "rb").read())
    end = len(data.rstrip(b"\0"))
    assert len(data) >= SEG and end < SEG  # the log's records, then the zero-filled rest
    data[end - 40:end] = bytes(40)  # the last record's end never reached the disk
    open(path, "wb").write(data)
    with caplog.at_level("WARNING"):
        got = [r[0] for r in read_segment(fs, path)]
    assert got == whole[:-1]
    assert "torn tail" in caplog.text


def test_bad_record_inside_preallocated_segment_is_corruption(tmp_path):
    """Damage before the last record is still corruption when zeros follow the records."""
    path, _ = _preallocated_log_with_records(tmp_path)
    data = bytearray(open(path, "rb").read())
    data[fmt.HEADER_SIZE + 20] ^= 0xFF  # inside the first record
    open(path, "wb").write(data)
    with pytest.raises(Corruption):
        list(read_segment(OsFileSystem(), path))


def _record_offsets(data: bytes) -> list[int]:
    """Where each record of a preallocated segment starts, up to its zero-filled tail."""
    pos, out = fmt.HEADER_SIZE, []
    while fmt.FRAME.unpack_from(data, pos)[0]:
        out.append(pos)
        pos += 8 + fmt.FRAME.unpack_from(data, pos)[0]
    return out


@pytest.mark.parametrize("hole", ["whole-block", "record-to-block-boundary"])
def test_lost_writeback_in_newest_segment_ends_the_replay(tmp_path, caplog, hole):
    """Power loss with out-of-order writeback (D44): a block written after the last fsync
    never reached the disk (zeros, as the preallocated file held there) while later blocks
    did, so whole records follow the damage. In the newest segment those records were
    never acknowledged: the replay stops before the damaged record and says so. In an
    older segment (synced whole before the next began) the same damage is corruption."""
    path, _ = _preallocated_log_with_records(tmp_path)
    fs = OsFileSystem()
    whole = [r[0] for r in read_segment(fs, path)]
    data = bytearray(open(path, "rb").read())
    offsets = _record_offsets(data)
    assert len(offsets) == len(whole) >= 20
    if hole == "whole-block":  # inside the span of the record over the block's start
        lo = (offsets[5] // BLOCK + 1) * BLOCK
        hi = lo + BLOCK
        first_bad = max(i for i, o in enumerate(offsets) if o <= lo)
    else:  # the last fsync ended at a record's start, mid-block; the rest of the block lost
        lo = offsets[5] if offsets[5] % BLOCK else offsets[6]
        hi = (lo // BLOCK + 1) * BLOCK
        first_bad = offsets.index(lo)
    assert offsets[-1] > hi  # whole records after the hole
    data[lo:hi] = bytes(hi - lo)
    open(path, "wb").write(data)
    with caplog.at_level("WARNING"):
        got = [r[0] for r in read_segment(fs, path, newest=True)]
    assert got == whole[:first_bad]
    assert f"zeros at offsets {lo}-{hi}" in caplog.text and "never acknowledged" in caplog.text
    with pytest.raises(Corruption, match="a valid record follows"):
        list(read_segment(fs, path))


def test_damage_other_than_a_hole_is_corruption_in_the_newest_segment(tmp_path):
    """Only zeros where blocks were lost pass as unacknowledged writes: other damage with
    whole records after it (a flipped byte, or zeros that reach no block boundary) is
    corruption in the newest segment too."""
    path, _ = _preallocated_log_with_records(tmp_path)
    data = bytes(open(path, "rb").read())
    offsets = _record_offsets(data)
    damaged = bytearray(data)
    damaged[offsets[5] + 30] ^= 0xFF
    open(path, "wb").write(damaged)
    with pytest.raises(Corruption):
        list(read_segment(OsFileSystem(), path, newest=True))
    damaged = bytearray(data)
    start = next(o for o in offsets[5:] if (o // BLOCK + 1) * BLOCK - o > 64)
    damaged[start:start + 32] = bytes(32)  # zeros from a record's start, short of a boundary
    open(path, "wb").write(damaged)
    with pytest.raises(Corruption):
        list(read_segment(OsFileSystem(), path, newest=True))


def test_in_memory_preallocated_file_keeps_synced_writes_and_zeros_at_a_crash():
    """The power-loss tests' model of a preallocated file (ringkv/testing/fs.py): after a
    crash, what was written over the zeros survives up to the last sync, zeros after it;
    the file's name survives only once its directory was synced."""
    fs = MemFileSystem()
    f = fs.open_preallocated("/d/seg", 64, lambda: False)
    fs.sync_dir("/d")
    f.write(b"a" * 10)
    f.sync()
    f.write(b"b" * 10)  # not synced
    assert fs.read_all("/d/seg") == b"a" * 10 + b"b" * 10 + bytes(44)
    fs.crash()
    assert fs.read_all("/d/seg") == b"a" * 10 + bytes(54)
    g = fs.open_preallocated("/d/other", 64, lambda: False)  # its directory never synced
    g.write(b"c")
    g.sync()
    fs.crash()
    assert not fs.exists("/d/other")
    assert fs.open_preallocated("/d/x", 64, lambda: True) is None  # stopped before it began
