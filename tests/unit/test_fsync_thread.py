"""The native fsync thread (D30) and the commit log's use of it: durability waits of an
event loop complete once a real fdatasync covered them, a failed fdatasync fails them and
every later write, segments still roll, other loops and source builds use the Python
syncer thread. Real files and real fdatasync; a pipe stands in for a file whose
fdatasync fails (Linux answers EINVAL for a pipe)."""

from __future__ import annotations

import asyncio
import errno
import os
import select
import threading

import pytest

from ringkv import compiled
from ringkv.config import StorageConfig
from ringkv.errors import Closed
from ringkv.storage import Engine
from ringkv.storage import commitlog_format as fmt
from ringkv.storage.commitlog_reader import read_segment
from ringkv.storage.commitlog_writer import CommitLogWriter
from ringkv.storage.fs import OsFileSystem

NAME = "ringkv.storage.fsync_thread"
native = compiled.load_native(NAME)
# skipped only when RINGKV_PURE_PYTHON asks for the source build; otherwise a missing or
# stale build fails these tests (as tests/unit/test_compiled.py does for the other modules)
needs_native = pytest.mark.skipif(compiled.wants_source(NAME),
                                  reason=f"{compiled.PURE_ENV} asks for the source build")

BATCH = StorageConfig(sync_mode="batch", inline_sync_min_records=0)


def wait_readable(fd: int) -> None:
    ready, _, _ = select.select([fd], [], [], 5)
    assert ready, "the fsync thread never signalled"


@needs_native
def test_thread_syncs_on_request_and_signals(tmp_path):
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    t = native.FsyncThread(fd, 10)
    try:
        assert t.drain() == (10, 0, 0)
        os.write(fd, b"x" * 100)
        t.request(fd, 12)
        wait_readable(t.fileno())
        assert t.drain() == (12, 0, 1)
        t.request(fd, 11)  # already covered: no new fsync, done never goes back
        assert t.drain()[0] == 12
        t.set_fd(fd)
    finally:
        t.stop()
        t.stop()  # idempotent
        t.close_eventfd()
        os.close(fd)


def _threads() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def _new_thread_policy(before: set[int]) -> int:
    """The scheduling policy of the one thread started since ``before`` was taken."""
    (tid,) = _threads() - before
    return os.sched_getscheduler(tid)


@needs_native
def test_thread_runs_under_sched_batch_unless_told_not_to(tmp_path):
    """D34: the fsync thread's wakeups must not preempt the event loop; the knob turns that off."""
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    for batch_sched, policy in ((True, os.SCHED_BATCH), (False, os.SCHED_OTHER)):
        before = _threads()
        t = native.FsyncThread(fd, 0, batch_sched)
        try:
            os.write(fd, b"x")
            t.request(fd, 1)  # a request answered means the thread has set its policy
            wait_readable(t.fileno())
            assert _new_thread_policy(before) == policy
        finally:
            t.stop()
            t.close_eventfd()
    os.close(fd)
    for batch_sched, policy in ((True, os.SCHED_BATCH), (False, os.SCHED_OTHER)):
        before = _threads()  # the config knob reaches the engine's thread
        cfg = StorageConfig(sync_mode="batch", inline_sync_min_records=0,
                            fsync_thread_batch_sched=batch_sched)
        with Engine.open(str(tmp_path / f"e{batch_sched}"), cfg) as e:
            assert e.stats()["fsync_thread"] == "native"
            asyncio.run(e.aput(b"k", b"v"))  # synced by the thread, which is running by now
            policies = {os.sched_getscheduler(tid) for tid in _threads() - before}
            assert policy in policies and (batch_sched or os.SCHED_BATCH not in policies)


@needs_native
def test_failed_fdatasync_is_sticky(tmp_path):
    r, w = os.pipe()
    t = native.FsyncThread(w, 0)
    try:
        t.request(w, 5)
        wait_readable(t.fileno())
        done, err, fsyncs = t.drain()
        assert (done, err, fsyncs) == (0, errno.EINVAL, 0)
        fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
        t.request(fd, 6)  # nothing is reported durable after a failure
        assert t.drain()[:2] == (0, errno.EINVAL)
        os.close(fd)
    finally:
        t.stop()
        t.close_eventfd()
        os.close(r)
        os.close(w)


@needs_native
def test_engine_loop_waits_use_the_native_thread(tmp_path):
    async def main(e: Engine) -> None:
        await asyncio.gather(*(e.aput(b"k%d" % i, b"v%d" % i) for i in range(200)))
        await e.adelete(b"k3")

    with Engine.open(str(tmp_path), BATCH) as e:
        assert e.stats()["fsync_thread"] == "native"
        asyncio.run(main(e))
        st = e.stats()
        assert st["writes_synced"] >= 201 and st["fsyncs"] >= 1
        assert st["fsyncs"] < 201  # group commit: a loop turn's writes share one fsync
    with Engine.open(str(tmp_path), BATCH) as e:
        assert e.get(b"k199") == b"v199" and e.get(b"k3") is None


@needs_native
def test_native_fsync_failure_fails_waiters_and_later_writes(tmp_path):
    """A replaced segment file whose fdatasync fails (a pipe): the waiting aput fails with
    Closed, and so does every write after it, instead of being acknowledged."""
    r, w = os.pipe()
    os.set_blocking(r, False)

    class PipeFile:  # writes reach the pipe; fdatasync of a pipe fails with EINVAL
        size = 0

        def write(self, data: bytes) -> None:
            os.write(w, data)
            os.read(r, 1 << 16)  # keep the pipe from filling

        def fileno(self) -> int:
            return w

        def sync(self) -> None:
            os.fdatasync(w)

        def close(self) -> None:
            pass

    async def main(e: Engine) -> None:
        with pytest.raises(Closed):
            await e.aput(b"a", b"1")
        with pytest.raises(Closed):
            await e.aput(b"b", b"2")

    e = Engine.open(str(tmp_path), BATCH)
    log = e._log
    real = log._file
    try:
        assert log.fsync_thread == "native"
        log._file = PipeFile()
        asyncio.run(main(e))
        assert log.synced_seq == 0
    finally:
        log._file = real
        e.close()  # the failure is recorded: close neither retries nor hangs
        os.close(r)
        os.close(w)


@needs_native
def test_segments_roll_under_native_syncs(tmp_path):
    """Tiny segments: the loop hands rolling rounds to the Python thread; every record is
    durable and readable, in order, across many segments."""
    w = CommitLogWriter(OsFileSystem(), str(tmp_path), 1, 0, "batch", 10, 300, threading.Lock())
    assert w.fsync_thread == "native"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for seq in range(1, 201):
            with w.lock:
                w.append(seq, fmt.KIND_PUT, b"k%d" % seq, b"v" * 20)
            fut = loop.create_future()
            w.add_waiter(seq, loop, fut)
            if seq % 7 == 0:
                await fut
        await fut

    asyncio.run(main())
    assert w.synced_seq == 200
    w.close()
    fs = OsFileSystem()
    seqs = [rec[0] for name in sorted(os.listdir(tmp_path))
            for rec in read_segment(fs, os.path.join(tmp_path, name))]
    assert seqs == list(range(1, 201))
    assert len(os.listdir(tmp_path)) > 5


@needs_native
def test_a_second_loop_uses_the_python_syncer(tmp_path):
    with Engine.open(str(tmp_path), BATCH) as e:
        asyncio.run(e.aput(b"first", b"1"))  # this loop now owns the native thread
        result = []

        def other() -> None:
            asyncio.run(e.aput(b"second", b"2"))
            result.append(e.get(b"second"))

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        assert result == [b"2"]
        assert e._log.synced_seq >= 2


def test_source_build_or_no_native_keeps_the_python_thread(tmp_path, monkeypatch):
    monkeypatch.setattr(compiled, "load_native", lambda name: None)
    with Engine.open(str(tmp_path), BATCH) as e:
        assert e.stats()["fsync_thread"] == "python"
        asyncio.run(e.aput(b"k", b"v"))
        assert e.stats()["writes_synced"] == 1


def test_group_commit_window_keeps_the_python_thread(tmp_path):
    cfg = StorageConfig(sync_mode="batch", group_commit_window_us=500)
    with Engine.open(str(tmp_path), cfg) as e:
        assert e.stats()["fsync_thread"] == "python"
