"""Flushes and compactions, run on background threads while reads and writes go on.

One flusher thread turns immutable memtables into SSTables, oldest first (so SSTable age
order is write order and ``flushed_seq`` only grows). One compactor thread merges runs of
tables picked by compaction.py. Both publish through ``_install``, which (under
``_manifest_mutex``, so the two never interleave) writes the new manifest first and only
then swaps the engine's read view: a crash between the two leaves the old or the new table
set, and files of the loser are orphans for open() to remove. Replaced tables are deleted
once no scan holds them (refcounts in sstable_reader.py).

With a ``scheduler`` (``Engine.open(scheduler=)``, the deterministic simulator) there are no
threads: a memtable switch defers one flush of every immutable memtable, a flush defers a
compaction pass, and the blocking waits (``wait_for_room``, ``wait_flushed``) flush inline.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from typing import Any, Optional

from ringkv.errors import Closed, StorageFull
from ringkv.storage import compaction, manifest
from ringkv.storage import sstable_format as sstf
from ringkv.storage.memtable import Memtable
from ringkv.storage.sstable_reader import SSTableReader
from ringkv.storage.sstable_writer import SSTableWriter

# A flush hands the writer this many keys at a time and yields the GIL in between. Why
# (docs/decisions.md D35): the writer's bulk path is compiled, and compiled code never
# gives the GIL up on its own (only the bytecode loop checks for a waiting thread), so one
# add_sorted of a whole 32 MiB memtable held it for most of a ~0.7 s flush, and the
# node's event loop, which needs the GIL for every request, stalled for up to ~450 ms.
FLUSH_SLICE_KEYS = 512
# A flush that failed for want of a resource (TRANSIENT_ERRNOS) is tried again after
# FLUSH_RETRY_FIRST_S, the wait doubling up to FLUSH_RETRY_MAX_S while it keeps failing
# (docs/decisions.md D37).
FLUSH_RETRY_FIRST_S = 1.0
FLUSH_RETRY_MAX_S = 10.0
# The errors a flush waits out: a resource that runs short for a while (descriptors, disk
# space, kernel memory). Any other one (EIO above all: a failing disk) stops the engine.
TRANSIENT_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.EDQUOT,
                              errno.ENOMEM))

log = logging.getLogger(__name__)


class Background:
    """The flusher and compactor of one engine (``e``)."""

    def __init__(self, e: Any, scheduler: Any = None) -> None:
        self._e = e
        self._scheduler = scheduler  # not None: no threads, work runs as deferred callbacks
        self._flush_deferred = False
        self._cond = threading.Condition()
        self._manifest_mutex = threading.Lock()
        self._compact_mutex = threading.Lock()
        self._stop = False
        self._compact_wanted = True
        self.error: Optional[BaseException] = None
        self.flushes = self.compactions = self.stalls = self.compactions_deferred = 0
        self.flush_failures = 0  # failed flush attempts (each tried again, FLUSH_RETRY_*)
        self.last_flush_error: Optional[str] = None  # until a flush succeeds again
        self.bytes_flushed = self.bytes_compacted = 0
        self.flushing = self.compacting = 0  # gauges: 1 while one runs
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if self._scheduler is not None:
            # as the compactor thread does at start (_compact_wanted): tables left by
            # earlier lives (one per replayed commit log) may be due for a compaction
            if self._e._cfg.compaction != "none":
                self._scheduler.defer("compact", self._compact_inline)
            return
        for target, name in ((self._flusher, "ringkv-flush"), (self._compactor, "ringkv-compact")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop both threads; a running flush finishes, a running compaction is abandoned."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    # -- signals from the engine ------------------------------------------------------------
    def notify_flush(self) -> None:
        if self._scheduler is not None:  # called under the engine lock: flush later
            if not self._flush_deferred:
                self._flush_deferred = True
                self._scheduler.defer("flush", self._flush_inline)
            return
        with self._cond:
            self._cond.notify_all()

    # -- scheduler mode (one thread: the simulator's event loop) ---------------------------
    def _flush_inline(self) -> None:
        """Flush every immutable memtable now, oldest first; then defer a compaction."""
        self._flush_deferred = False
        flushed = False
        while not self._stop and self.error is None and self._e._view[1]:
            try:
                self.flush_memtable(self._e._view[1][-1])
            except BaseException as exc:
                log.exception("flush failed; engine stops accepting writes")
                self.error = exc
                return
            flushed = True
        if flushed and self._e._cfg.compaction != "none":
            self._scheduler.defer("compact", self._compact_inline)

    def _compact_inline(self) -> None:
        try:
            while not self._stop and self.maybe_compact():
                pass
        except BaseException:
            log.exception("compaction failed; will retry after the next flush")

    def wait_for_room(self) -> None:
        """Back-pressure: block while more than max_pending_flushes memtables wait."""
        limit = self._e._cfg.max_pending_flushes
        if self._scheduler is not None:
            if len(self._e._view[1]) > limit:
                self.stalls += 1
                self._flush_inline()
            self._check()
            return
        with self._cond:
            if len(self._e._view[1]) > limit:
                self.stalls += 1
            while len(self._e._view[1]) > limit and not self._stop and self.error is None:
                self._cond.wait()
            self._check()

    def wait_flushed(self, seq: int) -> None:
        """Block until every write up to ``seq`` is in an SSTable."""
        if self._scheduler is not None:
            self._flush_inline()
        with self._cond:
            while self._e._state.flushed_seq < seq and not self._stop and self.error is None:
                self._cond.wait()
            self._check()
            if self._e._state.flushed_seq < seq:
                raise Closed("engine closed before the flush finished")

    def _check(self) -> None:
        if self.error is not None:
            raise Closed(f"engine failed in background: {self.error}")

    # -- flushing ------------------------------------------------------------------------
    def _flusher(self) -> None:
        delay = FLUSH_RETRY_FIRST_S
        while True:
            with self._cond:
                while not self._stop and not self._e._view[1]:
                    self._cond.wait()
                if self._stop:
                    return
            try:
                self.flush_memtable(self._e._view[1][-1])
            except OSError as exc:
                if exc.errno not in TRANSIENT_ERRNOS:
                    log.exception("flush failed; engine stops accepting writes")
                    with self._cond:
                        self.error = exc
                        self._cond.notify_all()
                    return
                # A resource ran short (no descriptors left, a full disk): the memtable is
                # still in memory and its writes in the commit log, so a new table written
                # from it later is as good; the failed one was never installed. Writers
                # stall meanwhile once max_pending_flushes wait.
                self.flush_failures += 1
                self.last_flush_error = f"{type(exc).__name__}: {exc}"
                log.error("flush failed (%s); trying again in %gs", exc, delay)
                with self._cond:
                    self._cond.wait_for(lambda: self._stop, timeout=delay)
                delay = min(delay * 2, FLUSH_RETRY_MAX_S)
                continue
            except BaseException as exc:
                log.exception("flush failed; engine stops accepting writes")
                with self._cond:
                    self.error = exc
                    self._cond.notify_all()
                return
            if delay != FLUSH_RETRY_FIRST_S:
                log.warning("flush succeeded after %d failed attempts", self.flush_failures)
                delay = FLUSH_RETRY_FIRST_S
                self.last_flush_error = None
            with self._cond:
                self._compact_wanted = True
                self._cond.notify_all()

    def flush_memtable(self, imm: Memtable) -> None:
        """Write ``imm`` (the oldest immutable memtable) to an SSTable and publish it."""
        e = self._e
        reader = None
        self.flushing = 1
        try:
            if len(imm):
                reader = self._write_table(None, len(imm), imm.max_seq, memtable=imm)
            with self._manifest_mutex:
                tables = e._view[2]
                new_tables = ((reader,) + tables) if reader is not None else tables
                self._install(new_tables, max(e._state.flushed_seq, imm.max_seq), drop_imm=imm,
                              new=reader)
        except BaseException:
            # Not installed (_install removed the file unless a manifest on disk names it)
            if reader is not None:
                reader.close()
            raise
        finally:
            self.flushing = 0
        if reader is not None:
            self.flushes += 1
            self.bytes_flushed += reader.file_bytes
        if e._log is not None:
            e._log.release_upto(e._state.flushed_seq)

    # -- compaction ----------------------------------------------------------------------
    def _compactor(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._compact_wanted:
                    self._cond.wait()
                if self._stop:
                    return
                self._compact_wanted = False
            try:
                while not self._stop and self.maybe_compact():
                    pass
            except BaseException as exc:
                log.exception("compaction failed; will retry after the next flush")
                if isinstance(exc, MemoryError):
                    with self._cond:
                        self.error = exc
                        self._cond.notify_all()
                    return

    def maybe_compact(self) -> bool:
        """Run one size-tiered compaction if one is due. Returns whether it ran."""
        cfg = self._e._cfg
        if cfg.compaction == "none":
            return False
        with self._compact_mutex:
            tables = self._e._view[2]
            pick = compaction.pick_size_tiered([t.file_bytes for t in tables],
                                               cfg.compaction_min_threshold, cfg.compaction_bucket_ratio)
            if pick is None:
                return False
            i, j = pick
            if not self._room_for(tables[i:j]):
                return False
            return self._compact(tables[i:j], tables[j:])

    def _room_for(self, run: tuple, explicit: bool = False) -> bool:
        """Whether the file system can hold a compaction of ``run`` (its output is at
        most the inputs' size) and still keep ``min_free_bytes`` free (D36). If not, the
        compaction waits for the next flush to try again: deferring it costs read speed,
        running out of space mid-write would cost the engine."""
        e = self._e
        if not e._min_free:
            return True
        free = e._free_now()
        need = sum(t.file_bytes for t in run) + e._min_free
        if free is None or free >= need:
            return True
        if explicit:  # an operator's compaction: say why it does not run
            raise StorageFull(e._path, free, e._min_free,
                              f"this compaction needs {need} bytes free (its {len(run)} tables "
                              "plus storage.min_free_bytes); nothing was compacted")
        self.compactions_deferred += 1
        log.warning("compaction of %d tables (%d bytes) deferred: %d bytes free, %d needed "
                    "(storage.min_free_bytes included)", len(run), need - e._min_free, free, need)
        return False

    def compact_range(self, i: int, j: int) -> bool:
        """Compact the current tables[i:j] (newest first), whatever their sizes; for tests
        and operators. Returns False if the range is empty."""
        with self._compact_mutex:
            tables = self._e._view[2]
            if not tables[i:j]:
                return False
            self._room_for(tables[i:j], explicit=True)
            return self._compact(tables[i:j], tables[j:])

    def compact_all(self) -> None:
        """Major compaction: merge every table into one (drops what gc_grace allows)."""
        with self._compact_mutex:
            tables = self._e._view[2]
            if tables:
                self._room_for(tables, explicit=True)
                self._compact(tables, ())

    def _compact(self, run: tuple, older: tuple) -> bool:
        self.compacting = 1
        try:
            return self._compact_run(run, older)
        finally:
            self.compacting = 0

    def _compact_run(self, run: tuple, older: tuple) -> bool:
        e = self._e
        now = e._clock.now()
        items = compaction.merge_sources([t.items() for t in run], e._merge)
        items = compaction.purge(items, now=now, gc_grace=e._cfg.gc_grace_seconds, merge=e._merge,
                                 purgeable=e._purgeable, older_may_hold=compaction.older_may_hold(list(older)))
        reader = self._write_table(items, sum(t.entries for t in run), max(t.max_seq for t in run))
        if reader is None:
            return False  # stopped
        if reader.entries == 0:
            reader.mark_obsolete()  # everything was purged: install nothing
            reader = None
        with self._manifest_mutex:
            tables = e._view[2]
            i = tables.index(run[0])
            assert tables[i:i + len(run)] == run, "compaction run must stay contiguous"
            new_tables = tables[:i] + ((reader,) if reader else ()) + tables[i + len(run):]
            self._install(new_tables, e._state.flushed_seq, new=reader)
        for t in run:
            t.mark_obsolete()
        self.compactions += 1
        self.bytes_compacted += sum(t.file_bytes for t in run)
        return True

    # -- shared --------------------------------------------------------------------------
    def _write_table(self, items: Any, expected: int, max_seq: int,
                     memtable: Optional[Memtable] = None) -> Optional[SSTableReader]:
        """Write one SSTable from sorted items, or in bulk from a frozen memtable (a
        flush, never abandoned); None if a compaction was stopped midway."""
        e = self._e
        cfg = e._cfg
        with self._manifest_mutex:
            tid = e._state.next_id
            e._state.next_id += 1
        path = os.path.join(e._sst_dir, sstf.table_name(tid))
        w = SSTableWriter(e._fs, path, block_bytes=cfg.block_bytes, compress=cfg.compression == "zlib",
                          bloom_fp_rate=cfg.bloom_fp_rate, expected_keys=expected)
        try:
            if memtable is not None:
                keys = memtable.sorted_keys()
                data = memtable.data
                for i in range(0, len(keys), FLUSH_SLICE_KEYS):
                    part = keys[i:i + FLUSH_SLICE_KEYS]
                    w.add_sorted(part, [data[k] for k in part])
                    time.sleep(0)  # let a waiting event loop have the GIL (see FLUSH_SLICE_KEYS)
            else:
                n = 0
                for k, entry in items:
                    w.add(k, entry)
                    n += 1
                    if not n & 4095 and self._stop:
                        w.abort()
                        return None
            w.finish(created=e._clock.now(), max_seq=max_seq)
        except BaseException:
            w.abort()
            raise
        e._fs.sync_dir(e._sst_dir)
        return SSTableReader(e._fs, path, tid, e._cache, e._tstats)

    def _discard_unless_named(self, table: SSTableReader) -> None:
        """A manifest naming ``table`` failed to save: remove its file now, unless the
        manifest on disk names it (renamed into place before its directory sync failed).
        Left for the next open, each failed retry on a full disk would keep a whole table's
        worth of the space an operator frees (D37). REQUIRES: _manifest_mutex held."""
        e = self._e
        try:
            on_disk = manifest.load(e._fs, e._path)
        except Exception:  # noqa: BLE001 - cannot tell: the next open removes an orphan
            return
        if on_disk is not None and table.table_id in on_disk.tables:
            return
        table.close()
        try:
            e._fs.remove(table.path)
        except OSError:
            pass

    def _install(self, tables: tuple, flushed_seq: int, drop_imm: Optional[Memtable] = None,
                 new: Optional[SSTableReader] = None) -> None:
        """Persist then publish a new table set (``new``: the table just written for it).
        REQUIRES: _manifest_mutex held."""
        e = self._e
        state = manifest.ManifestState([t.table_id for t in tables], e._state.next_id, flushed_seq)
        try:
            manifest.save(e._fs, e._path, state)
        except BaseException:
            if new is not None:
                self._discard_unless_named(new)
            raise
        with e._lock:
            mem, imms, _ = e._view
            if drop_imm is not None:
                imms = tuple(m for m in imms if m is not drop_imm)
            e._view = (mem, imms, tables)
            e._probe_cache = ((), ())  # holds the old readers (and their open files) otherwise
            e._state = state
