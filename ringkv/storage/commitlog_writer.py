"""Commit log writer: appends records to segment files, with group commit.

Writers append encoded records to an in-memory pending list under the engine lock (cheap,
never blocks on IO). Getting bytes to disk happens under ``_sync_mutex``: whoever holds it
swaps the pending list out, writes it to the current segment and (unless ``off``) fsyncs.

* ``batch``: a writer returns only when ``synced_seq`` covers its record. A waiter that
  finds no sync running becomes the leader: it lets writers that are still appending go
  first (GIL yields, only when others wait), then syncs everything appended so far; the
  others (followers) wait on ``_sync_cond`` and are woken together when it is done: one
  fsync per group. Async writers hand their future to the syncer thread instead; it
  starts a group commit at most once per ``group_commit_window_us`` (counted from the end
  of the previous one; 0, the default, = at once): each fsync covers more writes, but every
  write arriving within the window waits for it, a sequential writer included (measured:
  1000 us halves a single client's put rate). A write after a quiet window is synced at
  once. Each group completes its futures with one ``call_soon_threadsafe`` per event loop.
  A loop turn that appended at least ``inline_sync_min_records`` records (a pipelined
  burst) instead fsyncs them itself at the end of the turn, as Redis does, and completes
  its futures directly: the handoff to the thread costs more than the loop's wait there.
  With the native fsync thread (``ringkv.storage.fsync_thread``, D30; real files, no
  window), the loop writes a turn's records to the segment itself and hands only the
  fdatasync to a C thread that never takes the GIL; an eventfd the loop watches tells it
  when they are durable, and it completes its futures directly. Waiters of other loops,
  and builds without the extension, use the Python syncer thread as above.
* ``periodic``: the syncer thread fsyncs every ``sync_period_ms``.
* ``off``: the syncer thread (or a writer past 1 MiB pending) writes without fsync.
* with a ``scheduler`` (the simulator): no syncer thread; ``add_waiter`` defers one group
  commit covering every waiter so far, and periodic/off write-outs re-arm themselves.

Preallocated segments (D43, ``preallocate_segments``; ``batch`` and ``periodic`` only, not
under a scheduler): once the
current segment is ``1/PREPARE_AT_FRACTION`` full, a short-lived thread writes the next
one as ``PREPARED_NAME``, zero-filled to ``segment_bytes`` and synced; the roll writes its
header, syncs it and renames it into place, and the log writes on over its zeros. An
fdatasync then changes no file size, so the file system commits no metadata with it (on
ext4 about 0.7x the wall time and CPU of one into a growing file,
bench/fsync_prealloc.py). A segment that is not preallocated (the first one, or one opened
before its successor was ready) is rolled from as soon as a prepared one is. A crash
leaves at most a prepared file, removed at the next open, or a renamed one holding a
header and zeros: an empty segment to replay. Preparing starts only while the disk has
room for the zeros, the rest of the current segment and the engine's free-space floor
(``keep_free_bytes``), so the zeros never fill the disk under the log's own writes; one
that finds no room is given up until the next roll.

A full disk (ENOSPC or EDQUOT from a segment ``write``) does not stop the log (D42): the
part-written bytes are cut off again (``truncate``), the group's records go back to the
front of the pending list and the log is *stalled*: the syncer thread retries every
``STALL_RETRY_S``, and once a write fits every record is logged and its waiters complete
as usual. Nothing appended is dropped, so nothing acknowledged is lost and nothing is
acknowledged before it is durable; a waiter just waits (a node's request timeout bounds
it), and a blocking writer gives up with ``LogStalled`` after ``STALL_WAIT_S`` (its record
still waits in memory). No new segment fitting is the same: the log stays on the current
one and tries again at the next write-out. A failed fsync, or any other write error, stays
fatal (sticky): after it the file's state is unknown.

Invariants: records reach a segment in sequence order; ``synced_seq`` only grows and every
record with seq <= ``synced_seq`` is durable; a segment is deleted only when its highest
seq is covered by a flushed SSTable (``release_upto``). Lock order: ``_sync_mutex`` before
the engine lock, never the reverse.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
import time
from typing import Any

from crc32c import crc32c

from ringkv import compiled
from ringkv.errors import Closed
from ringkv.storage import commitlog_format as fmt

log = logging.getLogger(__name__)

WRITE_OUT_BYTES = 1 << 20  # unsynced modes: a writer flushes to the OS past this much pending
GATHER_YIELDS = 16  # batch mode: most GIL yields a leader makes while writers keep appending
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})  # a full disk: the log stalls (D42)
STALL_RETRY_S = 0.5  # stalled: how often the syncer tries the write again
STALL_WAIT_S = 10.0  # stalled: how long a blocking writer waits before LogStalled
PREPARED_NAME = fmt.PREPARED_NAME  # the next segment while it is preallocated (D43)
PREPARE_AT_FRACTION = 8  # start preparing the next segment once this share of the current is used


class LogStalled(Exception):
    """A blocking writer's record is still not logged after ``STALL_WAIT_S``: the disk is
    full. The record waits in memory and is logged once there is room (the engine turns
    this into StorageFull saying so)."""


class CommitLogWriter:
    """Appends to ``directory``'s segments, starting a new segment ``segment_id``."""

    def __init__(self, fs: Any, directory: str, segment_id: int, start_seq: int,
                 sync_mode: str, sync_period_ms: int, segment_bytes: int,
                 lock: threading.Lock, *, scheduler: Any = None,
                 group_commit_window_us: int = 0, group_commit_min_writes: int = 1,
                 inline_sync_min_records: int = 0, fsync_thread_batch_sched: bool = True,
                 preallocate: bool = False, keep_free_bytes: int = 0) -> None:
        self._fs, self._dir = fs, directory
        self._mode = sync_mode
        self._period = max(sync_period_ms, 1) / 1000.0
        self._segment_bytes = segment_bytes
        self.lock = lock  # the engine lock: guards _pending, _pending_bytes, appended_seq
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self.appended_seq = self.written_seq = self.synced_seq = start_seq
        self._sync_mutex = threading.Lock()  # held while writing out / fsyncing
        self._sync_cond = threading.Condition(threading.Lock())  # followers wait here
        self._syncing = False  # a leader is syncing (guarded by _sync_cond)
        self._in_wait = 0  # threads inside wait_synced (guarded by _sync_cond)
        self._roll_requested = False
        self._closed_segments: list[tuple[int, int]] = []  # (segment id, max seq)
        self._error: BaseException | None = None
        self._stalled = False  # a write-out found the disk full; its records wait (D42)
        self.stalls = 0  # write-outs and segment rolls that found the disk full
        self._roll_failing = False  # the last segment roll found no room (logged once)
        self.on_stall: Any = None  # called (no arguments) at each stall: the engine's guard
        self._waiters: list[tuple[int, Any, Any]] = []  # (seq, loop, future) for aput
        self._waiters_lock = threading.Lock()
        self._kick_loops: set[Any] = set()  # loops with a _kick scheduled (guarded by _waiters_lock)
        self._wake = threading.Event()
        self._stop = False
        self._window = max(group_commit_window_us, 0) / 1e6  # batch: least gap between fsyncs
        self._window_min = max(group_commit_min_writes, 1)  # ...when this many writes wait
        self._last_sync_end = 0.0  # time.monotonic() when the syncer's last group commit ended
        self._inline_min = inline_sync_min_records if sync_mode == "batch" else 0
        self.inline_syncs = 0  # group commits made by a loop turn itself (the rest: syncer)
        self.fsyncs = 0
        self.writes_synced = 0
        self._segment_id = segment_id - 1
        self._file: Any = None
        # preallocated segments (D43): only on a file system that can make them, never
        # under the simulator's scheduler (no threads there), and not in `off` mode: what
        # they make cheaper is the fsync, which `off` never does
        self._prealloc = (preallocate and sync_mode != "off" and scheduler is None
                          and hasattr(fs, "open_preallocated"))
        # preparing needs this much free first: the zeros, room for the rest of the current
        # segment, and the engine's free-space floor (D36), which the zeros must not breach
        self._prep_needs = 2 * segment_bytes + max(keep_free_bytes, 0)
        self._prep_lock = threading.Lock()  # guards the three below
        self._prep_state = "idle"  # "running", "ready" (in _prepared) or "failed" (until a roll)
        self._prepared: Any = None  # the prepared WritableFile once ready
        self._prep_thread: threading.Thread | None = None
        self._seg_preallocated = False  # the current segment was preallocated
        self.preallocated_segments = 0  # segments rolled onto that were preallocated
        if self._prealloc:  # a crash may have left one half written
            fs.remove(os.path.join(directory, PREPARED_NAME))
        self._open_segment(segment_id)
        # scheduler (the simulator, see Engine.open): no syncer thread; a group commit is a
        # deferred callback and periodic syncs re-arm themselves
        self._scheduler = scheduler
        self._sync_deferred = False
        # the native fsync thread (D30): batch mode on real files, with no group-commit
        # window (the C thread syncs as soon as asked), and only for the first loop to kick
        self._native: Any = None
        self._native_loop: Any = None
        self._native_fsyncs = 0  # the C thread's fsync count already added to self.fsyncs
        if (scheduler is None and sync_mode == "batch" and not self._window
                and hasattr(self._file, "fileno")):
            native = compiled.load_native("ringkv.storage.fsync_thread")
            if native is not None:
                self._native = native.FsyncThread(self._file.fileno(), self.synced_seq,
                                                  fsync_thread_batch_sched)
        self._thread: threading.Thread | None = None
        if scheduler is None:
            self._thread = threading.Thread(target=self._syncer, name="ringkv-syncer", daemon=True)
            self._thread.start()
        elif sync_mode != "batch":  # periodic: fsync; off: write out without fsync
            scheduler.defer("sync", self._periodic_inline, self._period)

    # -- appending (caller holds the engine lock) -------------------------------------
    def append(self, seq: int, kind: int, key: bytes, body: bytes) -> None:
        """Queue one record. REQUIRES: engine lock held; seq = previous seq + 1."""
        payload = fmt.PAYLOAD_HEAD.pack(seq, kind, len(key)) + key + body
        rec = fmt.FRAME.pack(len(payload), crc32c(payload)) + payload
        self._pending.append(rec)
        self._pending_bytes += len(rec)
        self.appended_seq = seq

    def request_roll(self) -> None:
        """Start a new segment at the next write-out (called at a memtable switch, so
        the old memtable's segments become deletable once it is flushed)."""
        self._roll_requested = True

    # -- durability -------------------------------------------------------------------
    def wait_synced(self, seq: int) -> None:
        """Block until record ``seq`` is durable (batch mode, leader/follower).

        If no sync is running the caller becomes the leader and syncs everything
        appended so far; otherwise it waits for the running sync to finish and checks
        again. Followers never queue behind a later leader's fsync once covered.
        """
        if self.synced_seq >= seq:
            return
        cond = self._sync_cond
        stalled_since = None
        with cond:
            self._in_wait += 1
            try:
                while self.synced_seq < seq:
                    self._check()
                    if self._syncing:
                        cond.wait()
                        continue
                    if self._stalled:  # wait a retry interval, then retry (bounded)
                        now = time.monotonic()
                        if stalled_since is None:
                            stalled_since = now
                        elif now - stalled_since >= STALL_WAIT_S:
                            raise LogStalled(f"record {seq} not logged after {STALL_WAIT_S:g} s: "
                                             "the disk is full")
                        cond.wait(STALL_RETRY_S)
                        if self.synced_seq >= seq or self._syncing:
                            continue
                    self._syncing = True
                    others = self._in_wait > 1
                    cond.release()
                    try:
                        if others:
                            self._gather()
                        with self._sync_mutex:
                            if self.synced_seq < seq:  # close() may have synced it meanwhile
                                self._check()
                                self._write_out(True)
                    finally:
                        cond.acquire()
                        self._syncing = False
                        cond.notify_all()
            finally:
                self._in_wait -= 1

    def _gather(self) -> None:
        """Leader only: yield the GIL while other writers are still appending, so one
        fsync covers them too (writers woken by the previous fsync would otherwise each
        miss this one by a few microseconds). Stops as soon as a yield brings nothing."""
        last = self.appended_seq
        for _ in range(GATHER_YIELDS):
            time.sleep(0)
            if self.appended_seq == last:
                return
            last = self.appended_seq

    def maybe_write_out(self) -> None:
        """Unsynced modes: hand pending bytes to the OS once enough have piled up."""
        if self._pending_bytes >= WRITE_OUT_BYTES:
            with self._sync_mutex:
                self._check()
                self._write_out(False)

    def add_waiter(self, seq: int, loop: Any, future: Any) -> None:
        """Complete ``future`` on ``loop`` once ``seq`` is durable (never blocks).

        The syncer is woken once per turn of ``loop`` (a ``call_soon``), not per waiter: the
        writes a turn makes (every command of every connection read in that turn) share one
        fsync, as Redis's ``appendfsync always`` does once per event-loop iteration. Waking
        it per waiter made it fsync a few writes at a time while the loop was still
        producing more: one ~90 us kernel fsync per ~20 writes at -P 16."""
        with self._waiters_lock:
            self._waiters.append((seq, loop, future))
            if self._scheduler is None:
                if loop in self._kick_loops:
                    return
                self._kick_loops.add(loop)
        if self._scheduler is None:
            try:
                loop.call_soon(self._kick, loop)
            except RuntimeError:  # the loop is closed: wake the syncer now
                self._kick(loop)
        elif not self._sync_deferred:
            self._sync_deferred = True
            self._scheduler.defer("sync", self._sync_inline)

    def _kick(self, loop: Any) -> None:
        with self._waiters_lock:
            self._kick_loops.discard(loop)
        if self._inline_min and self.appended_seq - self.written_seq >= self._inline_min:
            self._sync_on_loop(loop)
            return
        if self._native is not None and not self._stop and self._native_on(loop):
            self._native_kick(loop)
            return
        if not self._wake.is_set():  # set, it will still be cleared before the waiters are read
            self._wake.set()

    def _native_on(self, loop: Any) -> bool:
        """True if ``loop``'s waiters go to the native fsync thread: the first loop to ask
        starts watching its eventfd; others (and a loop without add_reader) do not."""
        if self._native_loop is loop:
            return True
        if self._native_loop is not None:
            return False
        try:
            loop.add_reader(self._native.fileno(), self._native_done)
        except (NotImplementedError, RuntimeError):
            return False
        self._native_loop = loop
        return True

    def _native_kick(self, loop: Any) -> None:
        """End of a loop turn: write the turn's records to the segment, then ask the C
        thread to fdatasync it; ``_native_done`` completes the waiters. A segment roll
        (fsyncs and a new file) or a sync running elsewhere would block the loop: the
        Python thread takes that round (it completes every loop's waiters)."""
        if (self._roll_requested or self._file.size >= self._segment_bytes or self._stalled
                or not self._sync_mutex.acquire(blocking=False)):
            if not self._wake.is_set():
                self._wake.set()
            return
        try:
            self._check()
            self._write_out(False, may_roll=False)
        except BaseException:  # recorded in _error (or it already was): fail the waiters
            self._sync_mutex.release()
            self._resolve_waiters(self._error, loop)
            return
        self._sync_mutex.release()
        if self.written_seq <= self.synced_seq:  # another path synced it all meanwhile
            self._resolve_waiters(self._error, loop)
            return
        self._native.request(self._file.fileno(), self.written_seq)

    def _native_done(self) -> None:
        """The eventfd reader (on the native loop): take the C thread's progress, complete
        the waiters it covers, or fail them all after a failed fdatasync."""
        done, err, fsyncs = self._native.drain()
        if self._stop:
            return  # close() resolves every waiter itself
        with self.lock:
            if done > self.synced_seq:
                self.writes_synced += done - self.synced_seq
                self.synced_seq = done
            self.fsyncs += fsyncs - self._native_fsyncs
            self._native_fsyncs = fsyncs
        if err and self._error is None:
            self._error = OSError(err, os.strerror(err))
            log.error("commit log fsync failed: %s", self._error)
        if self._in_wait:  # threads in wait_synced re-check
            with self._sync_cond:
                self._sync_cond.notify_all()
        self._resolve_waiters(self._error, self._native_loop)

    def _native_release(self) -> None:
        """close(): stop watching the eventfd (on its loop) and close it."""
        native, loop = self._native, self._native_loop
        if native is None:
            return
        if loop is None:
            native.close_eventfd()
            return

        def release() -> None:
            loop.remove_reader(native.fileno())
            native.close_eventfd()

        try:
            if asyncio._get_running_loop() is loop:
                release()
            else:
                loop.call_soon_threadsafe(release)
        except RuntimeError:  # the loop is closed, and its watch with it
            native.close_eventfd()

    def sync(self) -> None:
        """Write out and fsync everything appended so far (any mode)."""
        with self._sync_mutex:
            self._check()
            self._write_out(True)

    def release_upto(self, flushed_seq: int) -> None:
        """Delete closed segments whose every record is in a flushed SSTable."""
        with self._sync_mutex:
            keep = []
            for sid, max_seq in self._closed_segments:
                if max_seq <= flushed_seq:
                    self._fs.remove(os.path.join(self._dir, fmt.segment_name(sid)))
                else:
                    keep.append((sid, max_seq))
            self._closed_segments = keep

    def close(self) -> None:
        """Sync what is pending, stop the syncer and close the segment."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        if self._native is not None:
            self._native.stop()
        self._discard_prepared()
        with self._sync_mutex:
            try:
                if self._error is None:
                    self._write_out(True)
                    if self._stalled:  # still no room: say what is lost (never acknowledged)
                        log.warning("commit log closed with %d records not logged (the disk is "
                                    "full); none of them was acknowledged", len(self._pending))
            finally:
                self._resolve_waiters(self._error)  # those covered by the final sync succeed
                self._resolve_waiters(Closed("commit log closed"))
                self._file.close()
                if self._error is None:
                    self._error = Closed("commit log closed")
                self._native_release()
        with self._sync_cond:  # followers re-check: covered, or see the Closed error
            self._sync_cond.notify_all()

    @property
    def stalled(self) -> bool:
        """True while records wait in memory for room on the disk (D42)."""
        return self._stalled

    @property
    def fsync_thread(self) -> str:
        """Which thread syncs the event loop's writes: "native" (D30) or "python"."""
        return "native" if self._native is not None else "python"

    @property
    def segment_id(self) -> int:
        return self._segment_id

    # -- internals (caller holds _sync_mutex) ----------------------------------------
    def _check(self) -> None:
        if self._error is not None:
            raise self._error if isinstance(self._error, Closed) else Closed(
                f"commit log failed: {self._error}")

    def _write_out(self, fsync: bool, may_roll: bool = True) -> None:
        """Write pending records out (and fsync them if ``fsync``); roll to a new segment
        if one was asked for or this one is full, unless ``may_roll`` is False."""
        try:
            with self.lock:
                chunks, self._pending, self._pending_bytes = self._pending, [], 0
                last = self.appended_seq
                roll = self._roll_requested and may_roll
                if roll:
                    self._roll_requested = False
            if chunks:
                size = self._file.size
                try:
                    self._file.write(b"".join(chunks))
                except OSError as e:
                    if e.errno not in SPACE_ERRNOS:
                        raise
                    self._stall(chunks, size, roll, e)  # raises if it cannot cut the file back
                    last, roll = self.written_seq, False  # sync what was written before, no more
                else:
                    self._seg_max_seq = last
                    self.written_seq = last
                    if (self._prealloc and self._prep_state == "idle"
                            and self._file.size * PREPARE_AT_FRACTION >= self._segment_bytes):
                        self._start_prepare()
                    if self._stalled:
                        self._stalled = False
                        log.warning("commit log: room on the disk again, the waiting records "
                                    "are logged")
            if fsync and self.synced_seq < last:
                self._file.sync()
                with self.lock:  # the native loop's _native_done updates these too
                    self.fsyncs += 1
                    if last > self.synced_seq:
                        self.writes_synced += last - self.synced_seq
                        self.synced_seq = last
            if (roll or (may_roll and self._file.size >= self._segment_bytes)) \
                    and self._seg_max_seq > self._seg_start and not self._stalled:
                self._roll()
        except BaseException as e:  # an fsync failure leaves the file state unknown
            if self._error is None:
                self._error = e
                log.error("commit log write failed: %s", e)
            if isinstance(e, OSError):
                raise Closed(f"commit log write failed: {e}") from e
            raise

    def _stall(self, chunks: list[bytes], size: int, roll: bool, exc: OSError) -> None:
        """A write-out found the disk full: cut off what part of it reached the file, put
        its records back in front of the pending ones, and stall (module doc, D42)."""
        truncate = getattr(self._file, "truncate", None)
        if truncate is None:
            raise exc
        truncate(size)  # an error here: the file's end is unknown, the caller makes it sticky
        with self.lock:
            self._pending[:0] = chunks
            self._pending_bytes += sum(map(len, chunks))
            if roll:
                self._roll_requested = True
        self.stalls += 1
        if not self._stalled:
            self._stalled = True
            log.warning("commit log: %s; its records wait in memory, unacknowledged, until a "
                        "write fits (retried every %.1f s)", exc, STALL_RETRY_S)
        if self.on_stall is not None:
            self.on_stall()
        if not self._wake.is_set():  # the syncer may sleep without a timeout: start its retries
            self._wake.set()

    def _roll(self) -> None:
        if self._mode != "off":
            self._file.sync()
        old, old_id, old_max = self._file, self._segment_id, self._seg_max_seq
        try:
            self._open_segment(self._segment_id + 1)
        except OSError as e:  # no room for a new segment: stay on this one, try again later
            if e.errno not in SPACE_ERRNOS:
                raise
            self._roll_requested = True
            self.stalls += 1
            if not self._roll_failing:  # once, not at every write-out that tries again
                self._roll_failing = True
                log.warning("commit log: no room for a new segment (%s); writing on to "
                            "segment %d until there is", e, old_id)
            if self.on_stall is not None:
                self.on_stall()
            return
        self._roll_failing = False
        self._closed_segments.append((old_id, old_max))
        if self._native is not None:  # no sync of the old file runs once this returns;
            self._native.set_fd(self._file.fileno())  # the old one is synced above
        old.close()

    def _open_segment(self, segment_id: int) -> None:
        path = os.path.join(self._dir, fmt.segment_name(segment_id))
        head = fmt.HEADER.pack(fmt.MAGIC, fmt.VERSION, 0, segment_id)
        head += crc32c(head).to_bytes(4, "little")
        prepared = self._take_prepared()
        if prepared is not None and self._use_prepared(prepared, path, head):
            self._install(prepared, segment_id, preallocated=True)
            return
        f = self._fs.open_write(path)
        try:
            f.write(head)
            if self._mode != "off":
                f.sync()
                self._fs.sync_dir(self._dir)
        except BaseException:  # leave no segment without a whole header behind
            f.close()
            try:
                self._fs.remove(path)
            except OSError:
                pass
            raise
        self._install(f, segment_id, preallocated=False)

    def _install(self, f: Any, segment_id: int, preallocated: bool) -> None:
        """Make ``f`` (its header durable) the segment records are written to."""
        self._file, self._segment_id = f, segment_id
        self._seg_start = self._seg_max_seq = self.written_seq
        self._seg_preallocated = preallocated
        if preallocated:
            self.preallocated_segments += 1

    # -- preallocated segments (D43) ---------------------------------------------------
    def _start_prepare(self) -> None:
        """Start the thread that preallocates the next segment (caller: _sync_mutex)."""
        with self._prep_lock:
            if self._prep_state != "idle" or self._stop:
                return
            self._prep_state = "running"
            t = threading.Thread(target=self._prepare, name="ringkv-segment-prep", daemon=True)
            self._prep_thread = t
        t.start()

    def _prepare(self) -> None:
        """The preparing thread: zero-fill and sync the next segment, then hand it over."""
        path = os.path.join(self._dir, PREPARED_NAME)
        f = None
        try:
            free = self._fs.free_bytes(self._dir)
            if free < self._prep_needs:  # the zeros would take the room the writes need
                log.info("commit log: %.1f MiB free, under the %.1f MiB that preallocating "
                         "the next segment needs; it will be appended to instead",
                         free / 2**20, self._prep_needs / 2**20)
            else:
                f = self._fs.open_preallocated(path, self._segment_bytes, lambda: self._stop)
        except OSError as e:  # no room for it: segments are appended to as before
            log.info("commit log: cannot preallocate the next segment (%s); it will be "
                     "appended to instead", e)
        with self._prep_lock:
            if f is None or self._stop:
                self._prep_state = "failed"
                if f is not None:
                    f.close()
                    self._fs.remove(path)
                return
            self._prepared, self._prep_state = f, "ready"
        if not self._seg_preallocated:  # roll over to it at the next write-out
            with self.lock:
                self._roll_requested = True

    def _take_prepared(self) -> Any:
        """The prepared next segment if it is ready (else None); the next one may then be
        prepared again (caller: _sync_mutex, rolling)."""
        with self._prep_lock:
            f, self._prepared = self._prepared, None
            if self._prep_state != "running":
                self._prep_state = "idle"
        return f

    def _use_prepared(self, f: Any, path: str, head: bytes) -> bool:
        """Make the prepared file the segment at ``path``: header written and synced
        first, then renamed into place and the directory synced, so a crash leaves either
        no segment or one with a whole header. False (and the file removed) on an error:
        the caller opens a plain segment."""
        prepared_path = os.path.join(self._dir, PREPARED_NAME)
        try:
            f.write(head)
            if self._mode != "off":
                f.sync()
            self._fs.rename(prepared_path, path)
            if self._mode != "off":
                self._fs.sync_dir(self._dir)
        except OSError as e:
            f.close()
            self._fs.remove(prepared_path)
            if self._fs.exists(path):
                self._fs.remove(path)
            log.warning("commit log: the preallocated segment could not be used (%s); "
                        "appending to a new one", e)
            return False
        return True

    def _discard_prepared(self) -> None:
        """close(): stop a preparing thread and remove what it made."""
        t = self._prep_thread
        if t is not None:
            t.join()
        with self._prep_lock:
            f, self._prepared = self._prepared, None
        if f is not None:
            f.close()
            self._fs.remove(os.path.join(self._dir, PREPARED_NAME))

    def _syncer(self) -> None:
        """Background thread: async batch waiters, periodic fsync, unsynced write-out."""
        timeout = None if self._mode == "batch" else self._period
        while not self._stop:
            self._wake.wait(STALL_RETRY_S if self._stalled and timeout is None else timeout)
            self._wake.clear()
            if self._stop:
                break
            if self._mode == "batch":
                waiting = len(self._waiters)
                if not waiting and not self._stalled:
                    continue
                # under load, let more writes join this group: start at most one group
                # commit per window (counted from the end of the last one), so they share
                # one fsync; a light load is synced at once
                if self._window and waiting >= self._window_min:
                    delay = self._last_sync_end + self._window - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            self._group_commit()
            self._last_sync_end = time.monotonic()
            with self._sync_cond:
                self._sync_cond.notify_all()
            self._resolve_waiters(self._error)

    def _sync_on_loop(self, loop: Any) -> None:
        """A big turn's group commit, made by the loop itself (see ``inline_sync_min_records``):
        no wakeup of the syncer thread, no GIL handoff and no ``call_soon_threadsafe``; the
        loop's own waiters complete here, those of other loops through their loops."""
        if self._group_commit():
            self.inline_syncs += 1
        with self._sync_cond:  # threads in wait_synced re-check
            self._sync_cond.notify_all()
        self._resolve_waiters(self._error, loop)

    def _sync_inline(self) -> None:
        """Scheduler mode: one group commit covering every waiter so far (stalled: again
        after ``STALL_RETRY_S``)."""
        self._sync_deferred = False
        if self._stop:
            return
        self._sync_round()
        if self._stalled and not self._sync_deferred:
            self._sync_deferred = True
            self._scheduler.defer("sync", self._sync_inline, STALL_RETRY_S)

    def _periodic_inline(self) -> None:
        if not self._stop:
            self._sync_round()
            self._scheduler.defer("sync", self._periodic_inline, self._period)

    def _sync_round(self) -> None:
        self._group_commit()
        self._resolve_waiters(self._error)

    def _group_commit(self) -> bool:
        """Write out (and fsync unless ``off``) everything appended so far; True if it did.
        A failure is recorded in ``_error``, where the caller's waiters find it."""
        try:
            with self._sync_mutex:
                if self._error is None:
                    self._write_out(self._mode != "off")
                    return True
        except BaseException:
            pass
        return False

    def _resolve_waiters(self, error: BaseException | None, here: Any = None) -> None:
        with self._waiters_lock:
            if not self._waiters:
                return
            done_seq = self.synced_seq if self._mode != "off" else self.written_seq
            ready = [w for w in self._waiters if error is not None or w[0] <= done_seq]
            self._waiters = [w for w in self._waiters if error is None and w[0] > done_seq]
        by_loop: dict[Any, list[Any]] = {}
        for _seq, loop, fut in ready:
            by_loop.setdefault(loop, []).append(fut)
        for loop, futs in by_loop.items():
            if loop is here:  # called on that loop: complete now
                _complete(futs, error)
                continue
            try:
                loop.call_soon_threadsafe(_complete, futs, error)
            except RuntimeError:
                pass  # the loop is closed; nobody is waiting any more


def _complete(futures: list[Any], error: BaseException | None) -> None:
    for f in futures:
        if f is not None and not f.done():
            if error is None:
                f.set_result(None)
            else:
                f.set_exception(error if isinstance(error, Closed) else Closed(str(error)))
