"""The storage engine: commit log -> memtable -> SSTables, behind one small API.

Write path: under ``_lock`` a write takes the next sequence number, appends its record to
the commit log's pending buffer and applies it to the active memtable; then (outside the
lock) it waits for durability per ``sync_mode``. A full memtable is switched out (frozen)
and flushed by the background thread. Read path: active memtable, immutable memtables
newest first, then SSTables newest first, each guarded by key range and bloom filter.

Invariants: ``_view = (memtable, immutables newest first, tables newest first)`` is replaced
whole (never mutated), so a reader takes one consistent snapshot with one attribute load;
every write is in the commit log before it is acknowledged (batch: fsync'd); the log and
the memtables see writes in the same (seq) order, so replay rebuilds the same state.
Writes may be visible to concurrent readers slightly before they are durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from bisect import bisect_left
from typing import Any, Iterator, Optional

from ringkv.clock import Clock, SystemClock
from ringkv.config import StorageConfig
from ringkv.errors import Closed, InvalidRequest, StorageFull
from ringkv.storage import commitlog_format as clf
from ringkv.storage import manifest
from ringkv.storage.background import Background
from ringkv.storage.block_cache import BlockCache, capacity_for
from ringkv.storage.bloom import key_hash
from ringkv.storage.commitlog_writer import CommitLogWriter, LogStalled
from ringkv.storage.compaction import merge_sources
from ringkv.storage.entry import MergeFn, PurgeFn, combine, is_final, visible
from ringkv.storage.memtable import ENTRY_OVERHEAD, Memtable, snapshot_items
from ringkv.storage.recovery import COMMITLOG_DIR, SSTABLE_DIR, recover
from ringkv.storage.sstable_reader import TableStats
from ringkv.storage.fs import OsFileSystem
from ringkv.sim import bugs as _bugs

_PUT, _DELETE, _PUT_TTL = clf.KIND_PUT, clf.KIND_DELETE, clf.KIND_PUT_TTL
_PUT_BASE = clf.KIND_PUT_BASE
_pack_f64 = clf.F64.pack
SPACE_CHECK_BYTES = 1 << 20  # written between two free-space readings (min_free_bytes)
SPACE_RECHECK_S = 1.0  # while refusing writes: least time between two readings
_NO_SPACE_CHECK = 1 << 62  # _space_left when min_free_bytes is 0 (or the fs cannot tell)

log = logging.getLogger(__name__)


class Engine:
    """An embeddable, crash-safe, ordered bytes -> bytes store. Use :meth:`open`."""

    @classmethod
    def open(cls, path: str, config: StorageConfig = StorageConfig(), *, merge: Optional[MergeFn] = None,
             purgeable: Optional[PurgeFn] = None, clock: Optional[Clock] = None, fs: Any = None,
             scheduler: Any = None) -> "Engine":
        """Open (creating if needed) the engine in directory ``path``.

        Recovers from any crash: orphan files are removed and the commit log is replayed
        and flushed, so the engine starts with an empty log. ``merge(older, newer)`` turns
        puts into merge operands; ``purgeable(value, now)`` lets compaction drop values.
        ``scheduler`` (the deterministic simulator's seam): an object with
        ``defer(kind, fn, delay=0.0)``, kind "sync" | "flush" | "compact"; when given, the
        engine starts no threads and runs group-commit syncs, flushes and compactions as
        callbacks it hands to ``defer`` (one thread, an event loop: ringkv/sim).
        """
        config.validate()
        self = cls.__new__(cls)
        self._init(str(path), config, merge, purgeable, clock or SystemClock(), fs or OsFileSystem(),
                   scheduler)
        return self

    def _init(self, path: str, cfg: StorageConfig, merge: Optional[MergeFn], purgeable: Optional[PurgeFn],
              clock: Clock, fs: Any, scheduler: Any = None) -> None:
        self._path, self._cfg, self._merge, self._purgeable = path, cfg, merge, purgeable
        self._clock, self._fs = clock, fs
        self._sst_dir, self._log_dir = os.path.join(path, SSTABLE_DIR), os.path.join(path, COMMITLOG_DIR)
        self._lock = threading.Lock()
        self._cache = BlockCache(capacity_for(cfg.block_cache_bytes))
        self._tstats = TableStats()
        self._closed = True  # until open completes
        self._log: Optional[CommitLogWriter] = None
        self._gets = self._touched = self._bloom_neg = self._bloom_fp = self._range_skips = 0
        self._probe_cache: tuple = ((), ())  # (tables, their probes): _probes_of
        self._puts = self._deletes = 0
        self._mem_limit = cfg.memtable_bytes
        self._batch = cfg.sync_mode == "batch"
        # The free-space guard (D36): bytes writes may still log before the next reading
        # of the file system's free space; 0 = read it at the next write.
        self._free_of = getattr(fs, "free_bytes", None)
        self._min_free = cfg.min_free_bytes if self._free_of is not None else 0
        self._space_left = 0 if self._min_free else _NO_SPACE_CHECK
        self._free = -1  # the last reading (-1: none yet)
        self._free_read_at = float("-inf")
        self._refusing = False
        self._refused = 0
        rec = recover(fs, path, merge, self._cache, self._tstats)
        self._dir_lock = rec.lock
        self._state = rec.state
        self._seq = rec.last_seq
        self._view: tuple = (Memtable(), (rec.memtable,) if len(rec.memtable) else (), rec.tables)
        self._bg = Background(self, scheduler)
        try:
            if len(rec.memtable):  # replayed writes go straight to an SSTable
                self._bg.flush_memtable(rec.memtable)
            for sid in rec.segments:  # everything in them is now in SSTables
                fs.remove(os.path.join(self._log_dir, clf.segment_name(sid)))
            self._log = CommitLogWriter(fs, self._log_dir, (rec.segments[-1] + 1) if rec.segments else 1,
                                        self._seq, cfg.sync_mode, cfg.sync_period_ms, cfg.segment_bytes,
                                        self._lock, scheduler=scheduler,
                                        group_commit_window_us=cfg.group_commit_window_us,
                                        group_commit_min_writes=cfg.group_commit_min_writes,
                                        inline_sync_min_records=cfg.inline_sync_min_records,
                                        fsync_thread_batch_sched=cfg.fsync_thread_batch_sched,
                                        preallocate=cfg.preallocate_segments,
                                        keep_free_bytes=cfg.min_free_bytes)
        except BaseException:
            for t in self._view[2]:
                t.close()
            fs.unlock(self._dir_lock)
            raise
        self._log_append = self._log.append
        self._log.on_stall = self._on_log_stall
        self._closed = False
        self._bg.start()

    # -- writes ------------------------------------------------------------------------
    def put(self, key: bytes, value: bytes, *, ttl: Optional[float] = None) -> None:
        """Store ``value`` under ``key`` (a merge operand in merge mode); durable per sync_mode.

        ``ttl`` (seconds, last-write-wins mode only): the value reads as absent once the
        clock passes ``now + ttl`` and compaction may then drop it like a tombstone.
        """
        if value.__class__ is not bytes or key.__class__ is not bytes:
            key, value = bytes(key), bytes(value)
        if ttl is not None:
            return self._after_write(self._apply(key, _PUT_TTL, *self._ttl_entry(value, ttl)))
        with self._lock:
            if self._closed:
                raise Closed("engine is closed")
            if self._space_left <= 0:
                self._check_space()  # StorageFull below min_free_bytes: nothing written
            self._space_left -= len(key) + len(value)
            seq = self._seq = self._seq + 1
            self._log_append(seq, _PUT, key, value)
            mem = self._view[0]
            if self._merge is None:
                mem.data[key] = value
                mem.size += len(key) + len(value) + ENTRY_OVERHEAD
            else:
                mem.apply(key, value, self._merge)
            mem.max_seq = seq
            self._puts += 1
            if mem.size >= self._mem_limit:
                self._switch_locked()
        if self._batch:
            try:
                self._log.wait_synced(seq)  # type: ignore[union-attr]
            except LogStalled:
                raise self._stalled_error() from None
        else:
            self._log.maybe_write_out()  # type: ignore[union-attr]
        if len(self._view[1]) > self._cfg.max_pending_flushes:
            self._bg.wait_for_room()

    def delete(self, key: bytes) -> None:
        """Write a tombstone for ``key``; durable per sync_mode."""
        key = bytes(key)
        now = float(self._clock.now())
        self._deletes += 1
        self._after_write(self._apply(key, _DELETE, _pack_f64(now), now))

    def _ttl_entry(self, value: bytes, ttl: float) -> tuple[bytes, tuple]:
        if self._merge is not None:
            raise InvalidRequest("ttl is not supported with a merge function")
        expire = float(self._clock.now() + ttl)
        return _pack_f64(expire) + value, (value, expire, False)

    def _apply(self, key: bytes, kind: int, body: bytes, entry: Any) -> int:
        """Log and apply one write; returns its seq (not yet durable)."""
        with self._lock:
            if self._closed:
                raise Closed("engine is closed")
            if self._space_left <= 0:
                self._check_space()  # StorageFull below min_free_bytes: nothing written
            self._space_left -= len(key) + len(body)
            seq = self._seq = self._seq + 1
            self._log_append(seq, kind, key, body)
            mem = self._view[0]
            mem.apply(key, entry, self._merge)
            mem.max_seq = seq
            if mem.size >= self._mem_limit:
                self._switch_locked()
        return seq

    def _after_write(self, seq: int) -> None:
        if self._batch:
            try:
                self._log.wait_synced(seq)  # type: ignore[union-attr]
            except LogStalled:
                raise self._stalled_error() from None
        else:
            self._log.maybe_write_out()  # type: ignore[union-attr]
        if len(self._view[1]) > self._cfg.max_pending_flushes:
            self._bg.wait_for_room()

    def _on_log_stall(self) -> None:
        """The commit log found the disk full between two readings of the free space (D42):
        every write passes _check_space again, which refuses it while the log waits for
        room (guard on or off), then reads the free space as usual."""
        self._space_left = 0
        self._free = -1  # the first refusal reads it afresh for its message

    def _stalled_error(self) -> StorageFull:
        free = self._free_now()
        return StorageFull(self._path, -1 if free is None else free, self._min_free, detail=(
            "the disk filled before this write reached the commit log: it waits in memory, "
            "readable but not durable, and is logged once there is room (lost if the node "
            "stops first)"))

    def _check_space(self) -> None:
        """Read the free space of the data directory's file system; raise StorageFull
        while it is under ``min_free_bytes`` (and, once refusing, until it is an eighth
        above), and while the commit log is stalled (D42, guard on or off). REQUIRES: _lock
        held. Runs once per SPACE_CHECK_BYTES logged, and while refusing at most once per
        SPACE_RECHECK_S (the refused writes in between reuse the last reading): a write
        either passes the guard before anything of it is logged or applied, or is refused
        whole."""
        clog = self._log
        if clog is not None and clog.stalled:  # D42: refused whole until the log has room
            self._refused += 1
            if self._free < 0:  # one reading per stall, for the message
                free = self._free_now()
                self._free = -1 if free is None else free
            raise StorageFull(self._path, self._free, self._min_free, detail=(
                "the commit log is waiting for room on the disk, so nothing was written (free "
                "space there: writes resume by themselves)"))
        if not self._min_free:  # the guard is off: no reading until the next stall
            self._space_left = _NO_SPACE_CHECK
            return
        now = self._clock.monotonic()
        if self._refusing and now - self._free_read_at < SPACE_RECHECK_S:
            self._refused += 1
            raise StorageFull(self._path, self._free, self._min_free)
        try:
            free = self._free_of(self._path)  # type: ignore[misc]
        except OSError as exc:  # cannot tell: let writes through, look again later
            log.warning("cannot read the free space of %s: %s", self._path, exc)
            self._space_left = SPACE_CHECK_BYTES
            return
        self._free, self._free_read_at = free, now
        # once refusing, resume only an eighth above the floor: a flush or a delivered
        # hint moving the free space across the floor does not flip the node each time
        if free < (self._min_free + (self._min_free >> 3) if self._refusing else self._min_free):
            if not self._refusing:
                self._refusing = True
                log.warning("%s has %d bytes free, under storage.min_free_bytes = %d: "
                            "refusing writes until space is freed", self._path, free,
                            self._min_free)
            self._refused += 1
            raise StorageFull(self._path, free, self._min_free)
        if self._refusing:
            self._refusing = False
            log.warning("%s has %d bytes free again: accepting writes (%d refused)",
                        self._path, free, self._refused)
        # the next reading at the latest when what is left above the floor is used up
        self._space_left = min(SPACE_CHECK_BYTES, free - self._min_free) or 1

    def _free_now(self) -> Optional[int]:
        """A fresh reading of the free space (None if the file system cannot tell)."""
        try:
            return self._free_of(self._path) if self._free_of is not None else None
        except OSError:
            return None

    def _switch_locked(self) -> None:
        """Freeze the active memtable and hand it to the flusher. REQUIRES: _lock held."""
        mem, imms, tables = self._view
        self._view = (Memtable(), (mem,) + imms, tables)
        self._log.request_roll()  # type: ignore[union-attr]
        self._bg.notify_flush()

    # -- reads -------------------------------------------------------------------------
    def get(self, key: bytes) -> Optional[bytes]:
        """The value for ``key``, or None if absent, deleted or expired."""
        mem, imms, tables = self._view
        if self._closed:
            raise Closed("engine is closed")
        self._gets += 1
        return self._lookup(key, mem, imms, self._probes_of(tables))

    def get_many(self, keys: list[bytes]) -> list[Optional[bytes]]:
        """:meth:`get` of each key, all from one view (a pipelined group of reads)."""
        mem, imms, tables = self._view
        if self._closed:
            raise Closed("engine is closed")
        self._gets += len(keys)
        probes, lookup = self._probes_of(tables), self._lookup
        return [lookup(key, mem, imms, probes) for key in keys]

    def _probes_of(self, tables: tuple) -> tuple:
        """``(min_key, max_key, may_contain, get)`` of each table, for one table set.

        Why: a read asks up to four things of every table it passes, and each is an
        attribute lookup on the reader object; taken once per table set (the set changes
        only at a flush or a compaction) they are four tuple items. The cache is one
        ``(tables, probes)`` pair, replaced whole, so a reader on another thread sees the
        old pair or the new one; installing a new table set clears it (background.py), so
        it never keeps a replaced table's reader, and its deleted file, open."""
        cached = self._probe_cache
        if cached[0] is tables:
            return cached[1]
        probes = tuple((t.min_key, t.max_key, t.may_contain, t.get) for t in tables)
        self._probe_cache = (tables, probes)
        return probes

    def _lookup(self, key: bytes, mem: Memtable, imms: tuple, probes: tuple) -> Optional[bytes]:
        """The visible value of ``key`` in one view: memtables, then tables, newest first,
        merging operands (merge mode) until an entry is final."""
        merge = self._merge
        acc = mem.data.get(key)
        if acc is None or not is_final(acc, merge):
            for im in imms:
                e = im.data.get(key)
                if e is not None:
                    acc = e if acc is None else combine(e, acc, merge)
                    if is_final(acc, merge):
                        break
            else:
                acc = self._fold_tables(key, acc, probes)
        if acc is None:
            return None
        return acc if acc.__class__ is bytes else visible(acc, self._clock.now())

    def _fold_tables(self, key: bytes, acc: Any, probes: tuple) -> Any:
        """``acc`` (what the memtables hold for ``key``, or None) with the tables' entries
        folded in under it, newest first, until final. Each table is guarded by its key
        range and its bloom filter, in that order."""
        merge = self._merge
        h = key_hash(key)
        touched = skips = negatives = false_positives = 0
        for lo, hi, may_contain, table_get in probes:
            if key < lo or key > hi:
                skips += 1
                continue
            if not may_contain(h):
                negatives += 1
                continue
            touched += 1
            e = table_get(key)
            if e is None:
                false_positives += 1
                continue
            acc = e if acc is None else combine(e, acc, merge)
            if is_final(acc, merge):
                break
        self._touched += touched
        if skips:
            self._range_skips += skips
        if negatives:
            self._bloom_neg += negatives
        if false_positives:
            self._bloom_fp += false_positives
        return acc

    def _snapshot(self, lo: bytes, hi: Optional[bytes]) -> tuple[list, Any, Any]:
        """What a scan of [lo, hi) reads, taken under the lock: the memtable's items, the
        immutable memtables and the SSTables (each acquired; the scan releases them)."""
        with self._lock:
            if self._closed:
                raise Closed("engine is closed")
            mem, imms, tables = self._view
            mem_items = snapshot_items(mem.data, lo, hi)
            for t in tables:
                t.acquire()
        return mem_items, imms, tables

    def scan(self, start: bytes = b"", end: Optional[bytes] = None) -> Iterator[tuple[bytes, bytes]]:
        """Ordered (key, value) pairs over [start, end), as of this call (a snapshot)."""
        return self._scan_iter(*self._snapshot(start, end), start, end)

    def _scan_iter(self, mem_items: list, imms: tuple, tables: tuple, start: bytes,
                   end: Optional[bytes]) -> Iterator[tuple[bytes, bytes]]:
        try:
            yield from self._visible_range(mem_items, imms, tables, start, end)
        finally:
            for t in tables:
                t.release()

    def _visible_range(self, mem_items: list, imms: tuple, tables: tuple, start: bytes,
                       end: Optional[bytes]) -> Iterator[tuple[bytes, bytes]]:
        """The visible (key, value) pairs of ``[start, end)``: ``mem_items`` (the active
        memtable's, already cut to the range), the immutable memtables and the tables,
        merged newest first. The caller holds the tables acquired."""
        sources: list[Any] = [mem_items]
        sources += [im.items(start, end) for im in imms]
        sources += [t.items(start, end) for t in tables]
        now = self._clock.now()
        for k, e in merge_sources(sources, self._merge):
            v = visible(e, now)
            if v is not None:
                yield k, v

    def scan_ranges(self, ranges: list[tuple[bytes, Optional[bytes]]]) -> Iterator[tuple[bytes, bytes]]:
        """:meth:`scan` of each ``[start, end)`` of ``ranges`` in turn, all from one snapshot
        taken at this call. The active memtable is copied once for all of them, not once per
        range: many small scans (anti-entropy's rescans and bucket scans) would otherwise
        each walk the whole memtable."""
        if not ranges:
            return iter(())
        lo = min(start for start, _ in ranges)
        hi = None if any(end is None for _, end in ranges) else max(end for _, end in ranges)  # type: ignore[type-var]
        return self._scan_ranges_iter(*self._snapshot(lo, hi), ranges)

    def _scan_ranges_iter(self, mem_items: list, imms: tuple, tables: tuple,
                          ranges: list[tuple[bytes, Optional[bytes]]]) -> Iterator[tuple[bytes, bytes]]:
        try:
            keys = [k for k, _ in mem_items]
            for start, end in ranges:
                i = bisect_left(keys, start)
                j = len(keys) if end is None else bisect_left(keys, end)
                yield from self._visible_range(mem_items[i:j], imms, tables, start, end)
        finally:
            for t in tables:
                t.release()

    # -- maintenance ---------------------------------------------------------------------
    def flush(self) -> None:
        """Write every memtable to SSTables; returns when they are installed."""
        with self._lock:
            if self._closed:
                raise Closed("engine is closed")
            if len(self._view[0].data):
                self._switch_locked()
            seq = self._seq
        self._bg.wait_flushed(seq)

    def checkpoint(self, dest: str) -> dict[str, int]:
        """Write this engine as of now into the new directory ``dest``: flush, then
        hard-link every live SSTable into it (a copy where the file system has no links)
        and write a manifest naming them. ``Engine.open(dest)`` opens it with every write
        acknowledged before the call, and no commit log. Tables are immutable and held
        while they are linked, so compaction may run meanwhile. Returns the tables and
        bytes of the checkpoint."""
        fs = self._fs
        if fs.exists(dest):
            raise InvalidRequest(f"checkpoint directory {dest} exists already")
        self.flush()
        with self._lock:
            if self._closed:
                raise Closed("engine is closed")
            tables, seq = self._view[2], self._seq
            for t in tables:
                t.acquire()
        try:
            sst_dir = os.path.join(dest, SSTABLE_DIR)
            fs.makedirs(sst_dir)
            fs.makedirs(os.path.join(dest, COMMITLOG_DIR))
            total = 0
            link = getattr(fs, "link", None)
            for t in tables:
                target = os.path.join(sst_dir, os.path.basename(t.path))
                if link is not None:
                    total += link(t.path, target)
                else:
                    data = fs.read_all(t.path)
                    f = fs.open_write(target)
                    try:
                        f.write(data)
                        f.sync()
                    finally:
                        f.close()
                    total += len(data)
            fs.sync_dir(sst_dir)
            ids = [t.table_id for t in tables]  # newest first, as the view holds them
            manifest.save(fs, dest, manifest.ManifestState(ids, max(ids, default=0) + 1, seq))
        finally:
            for t in tables:
                t.release()
        return {"tables": len(tables), "bytes": total}

    def compact(self) -> None:
        """Flush, then merge all SSTables into one (a major compaction)."""
        self.flush()
        self._bg.compact_all()

    def close(self) -> None:
        """Make pending writes durable, stop background work and release files."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._bg.stop()
        try:
            self._log.close()  # type: ignore[union-attr]
        finally:
            for t in self._view[2]:
                t.close()
            self._fs.unlock(self._dir_lock)

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Counters and gauges (see docs/format and the issue for their meaning)."""
        mem, imms, tables = self._view
        log, bg, ts = self._log, self._bg, self._tstats
        sizes = [t.file_bytes for t in tables]
        total = sum(sizes)
        gets = self._gets
        return {
            "puts": self._puts, "deletes": self._deletes, "gets": gets,
            "bloom_negatives": self._bloom_neg, "bloom_false_positives": self._bloom_fp,
            "range_skips": self._range_skips, "sstables_touched": self._touched,
            "sstables_per_read": self._touched / gets if gets else 0.0,
            "blocks_read": ts.blocks_read, "block_cache_hits": ts.block_cache_hits,
            "bytes_read": ts.bytes_read, "block_cache_bytes": self._cache.size,
            "block_cache_capacity": self._cache.capacity,
            "fsyncs": log.fsyncs if log else 0, "inline_syncs": log.inline_syncs if log else 0,
            "fsync_thread": log.fsync_thread if log else "none",
            "writes_synced": log.writes_synced if log else 0,
            "writes_per_fsync": (log.writes_synced / log.fsyncs) if log and log.fsyncs else 0.0,
            "memtable_bytes": mem.size, "immutable_memtables": len(imms),
            "flushes": bg.flushes, "compactions": bg.compactions, "write_stalls": bg.stalls,
            "compactions_deferred": bg.compactions_deferred,
            "flush_failures": bg.flush_failures, "last_flush_error": bg.last_flush_error,
            "flushing": bg.flushing, "compacting": bg.compacting,
            "bytes_flushed": bg.bytes_flushed, "bytes_compacted": bg.bytes_compacted,
            "sstables": len(tables), "sstable_bytes": total,
            "sstable_entries": sum(t.entries for t in tables),
            "space_amplification": total / max(sizes) if sizes else 1.0,
            "last_seq": self._seq, "flushed_seq": self._state.flushed_seq,
            "free_bytes": self._free_now(), "min_free_bytes": self._min_free,
            "storage_full": self._refusing, "writes_refused": self._refused,
            "commitlog_stalled": log.stalled if log else False,
            "commitlog_stalls": log.stalls if log else 0,
            "commitlog_preallocated_segments": log.preallocated_segments if log else 0,
        }

    # -- asyncio ---------------------------------------------------------------------------
    async def aput(self, key: bytes, value: bytes, *, ttl: Optional[float] = None) -> None:
        """:meth:`put` for the event loop: waits on a future. (In ``batch`` mode a loop turn
        that appended ``inline_sync_min_records`` or more records fsyncs them on the loop,
        once, at the end of the turn; smaller turns never block it.)"""
        if ttl is None:
            fut = self.aput_nowait(key, value)
            if fut is not None:
                await fut
            return
        key, value = bytes(key), bytes(value)
        seq = self._apply(key, _PUT_TTL, *self._ttl_entry(value, ttl))
        fut = self._durable_future(seq)
        if fut is not None:
            await fut

    def aput_nowait(self, key: bytes, value: bytes, base: bool = False,
                    wait: bool = True) -> Optional[asyncio.Future]:
        """:meth:`aput` without a coroutine (the hot path): the write is applied now, from
        the event loop; returns None if it is already durable, else a future (result
        None) that is done once it is durable per sync_mode.

        ``base`` (merge mode): ``value`` already includes every older entry of the key (the
        caller read the key and merged into it in this same step), so it is stored as a
        base that shadows them: reads stop at it and compaction drops what it hides,
        instead of merging the older operands again on every read. Ignored without a merge
        function (every put shadows then).

        ``wait=False``: return None without looking at durability; the caller waits for
        many writes at once with :meth:`durable_nowait` (one future instead of one each)."""
        if value.__class__ is not bytes or key.__class__ is not bytes:
            key, value = bytes(key), bytes(value)
        if base and self._merge is not None:
            seq = self._apply(key, _PUT_BASE, value, (value, None, True))  # a tuple: entry.py
        else:
            seq = self._apply(key, _PUT, value, value)
        self._puts += 1
        return self._durable_future(seq) if wait else None

    def durable_nowait(self) -> Optional[asyncio.Future]:
        """None if every write applied so far is durable per sync_mode, else a future done
        once it is: the one wait for a run of ``aput_nowait(..., wait=False)`` (the commit
        log syncs in seq order, so covering the last seq covers them all)."""
        return self._durable_future(self._seq)

    def _durable_future(self, seq: int) -> Optional[asyncio.Future]:
        """None if write ``seq`` needs no waiting, else a future done once it is durable."""
        log = self._log
        if _bugs.ACTIVE and "ack_before_fsync" in _bugs.ACTIVE:  # deliberate bug (ringkv/sim/bugs.py)
            log.add_waiter(seq, asyncio.get_running_loop(), None)  # type: ignore[union-attr]
            return None
        if len(self._view[1]) > self._cfg.max_pending_flushes:  # stall: the slow path
            return asyncio.ensure_future(self._await_durable(seq))
        if self._batch:
            if log.synced_seq < seq:  # type: ignore[union-attr]
                loop = asyncio.get_running_loop()
                fut = loop.create_future()
                log.add_waiter(seq, loop, fut)  # type: ignore[union-attr]
                return fut
        elif log._pending_bytes >= (1 << 20):  # type: ignore[union-attr]
            log._wake.set()  # type: ignore[union-attr]  # let the syncer write it out
        return None

    async def adelete(self, key: bytes) -> None:
        """:meth:`delete` for the event loop."""
        now = float(self._clock.now())
        self._deletes += 1
        await self._await_durable(self._apply(bytes(key), _DELETE, _pack_f64(now), now))

    async def aget(self, key: bytes) -> Optional[bytes]:
        """:meth:`get` for the event loop: memtable hits inline, SSTable reads on a thread."""
        mem, imms, _ = self._view
        if self._closed:
            raise Closed("engine is closed")
        for m in (mem,) + imms:
            e = m.data.get(key)
            if e is not None:
                if is_final(e, self._merge):
                    self._gets += 1
                    return visible(e, self._clock.now())
                break
        return await asyncio.get_running_loop().run_in_executor(None, self.get, key)

    async def _await_durable(self, seq: int) -> None:
        loop = asyncio.get_running_loop()
        if len(self._view[1]) > self._cfg.max_pending_flushes:
            await loop.run_in_executor(None, self._bg.wait_for_room)
        log = self._log
        if self._batch and log.synced_seq < seq:  # type: ignore[union-attr]
            fut = loop.create_future()
            log.add_waiter(seq, loop, fut)  # type: ignore[union-attr]
            await fut
        elif not self._batch and log._pending_bytes >= (1 << 20):  # type: ignore[union-attr]
            log._wake.set()  # type: ignore[union-attr]  # let the syncer write it out
