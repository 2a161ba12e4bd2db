"""Engine start-up: lock the directory, load the manifest, drop orphans, replay the log.

Invariants on return: every file in ``sstables/`` is named by the manifest (orphans from a
crash mid-flush or mid-compaction are deleted, and so are any left-over temp files); the
returned memtable holds exactly the commit log records with seq > ``flushed_seq``, applied
in seq order; nothing on disk has been changed except orphan removal, so a crash during
recovery is itself recoverable.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Optional

from ringkv.storage import commitlog_format as clf
from ringkv.storage import manifest
from ringkv.storage import sstable_format as sstf
from ringkv.storage.block_cache import BlockCache
from ringkv.storage.commitlog_reader import read_segment
from ringkv.storage.entry import MergeFn
from ringkv.storage.memtable import Memtable
from ringkv.storage.sstable_reader import SSTableReader, TableStats

log = logging.getLogger(__name__)

SSTABLE_DIR = "sstables"
COMMITLOG_DIR = "commitlog"
LOCK_NAME = "LOCK"


@dataclass
class Recovered:
    state: manifest.ManifestState
    tables: tuple[SSTableReader, ...]  # newest first
    memtable: Memtable  # replayed writes not yet in any SSTable
    last_seq: int
    segments: list[int]  # existing commit log segment ids, oldest first
    lock: Any


def recover(fs: Any, path: str, merge: Optional[MergeFn], cache: BlockCache,
            stats: TableStats) -> Recovered:
    """Bring ``path`` to a consistent state and read what it holds."""
    sst_dir, log_dir = os.path.join(path, SSTABLE_DIR), os.path.join(path, COMMITLOG_DIR)
    for d in (path, sst_dir, log_dir):
        fs.makedirs(d)
    lock = fs.lock(os.path.join(path, LOCK_NAME))
    try:
        state = manifest.load(fs, path)
        if state is None:
            state = manifest.ManifestState()
            manifest.save(fs, path, state)
        fs.remove(os.path.join(path, manifest.TMP_NAME))
        # a segment being preallocated when the process died holds no records (D43); it
        # goes before the replay, whose flush may need the room it takes on a full disk
        fs.remove(os.path.join(log_dir, clf.PREPARED_NAME))
        _remove_orphans(fs, sst_dir, set(state.tables))
        tables: list[SSTableReader] = []
        try:
            for tid in state.tables:
                tables.append(SSTableReader(fs, os.path.join(sst_dir, sstf.table_name(tid)), tid, cache, stats))
            mem, last_seq, segments = _replay(fs, log_dir, state.flushed_seq, merge)
        except BaseException:
            for t in tables:
                t.close()
            raise
        state.next_id = max([state.next_id] + [t + 1 for t in state.tables])
        return Recovered(state, tuple(tables), mem, last_seq, segments, lock)
    except BaseException:
        fs.unlock(lock)
        raise


def _remove_orphans(fs: Any, sst_dir: str, live: set[int]) -> None:
    for name in fs.listdir(sst_dir):
        tid = sstf.parse_table_name(name)
        if tid is None or tid not in live:
            log.info("removing orphan file %s", os.path.join(sst_dir, name))
            fs.remove(os.path.join(sst_dir, name))


def _replay(fs: Any, log_dir: str, flushed_seq: int, merge: Optional[MergeFn]) -> tuple[Memtable, int, list[int]]:
    segments = sorted(s for s in (clf.parse_segment_name(n) for n in fs.listdir(log_dir)) if s is not None)
    mem = Memtable()
    last_seq = flushed_seq
    unpack_f64 = clf.F64.unpack_from
    for sid in segments:
        for seq, kind, key, body in read_segment(fs, os.path.join(log_dir, clf.segment_name(sid)),
                                                   newest=sid == segments[-1]):
            if seq <= flushed_seq:
                continue
            if kind == clf.KIND_PUT:
                entry: Any = body
            elif kind == clf.KIND_DELETE:
                entry = unpack_f64(body, 0)[0]
            elif kind == clf.KIND_PUT_BASE:
                entry = (body, None, True) if merge is not None else body
            else:
                entry = (body[8:], unpack_f64(body, 0)[0], False)
            mem.apply(key, entry, merge)
            if seq > last_seq:
                last_seq = seq
            mem.max_seq = last_seq
    if segments:
        log.info("replayed %d commit log records from %d segments", len(mem), len(segments))
    return mem, last_seq, segments
