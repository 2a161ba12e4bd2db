"""Commit log writer and reader: round trip, segment rolling and release, group commit."""

from __future__ import annotations

import os
import threading

from ringkv.storage import commitlog_format as fmt
from ringkv.storage.commitlog_reader import read_segment
from ringkv.storage.commitlog_writer import CommitLogWriter
from ringkv.storage.fs import OsFileSystem


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
