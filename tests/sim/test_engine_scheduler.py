"""The storage engine in scheduler mode (no threads), as the simulator runs it."""

from __future__ import annotations

import asyncio

from ringkv.config import StorageConfig
from ringkv.sim.disk import NodeDisk
from ringkv.sim.loop import SimLoop
from ringkv.storage.commitlog_format import KIND_PUT
from ringkv.storage.engine import Engine


class Manual:
    """A scheduler that queues deferred work until the test runs it."""

    def __init__(self) -> None:
        self.queue: list[tuple[str, object]] = []

    def defer(self, kind: str, fn, delay: float = 0.0) -> None:
        self.queue.append((kind, fn))

    def run(self, kind: str | None = None) -> int:
        todo = [(k, f) for k, f in self.queue if kind is None or k == kind]
        self.queue = [(k, f) for k, f in self.queue if not (kind is None or k == kind)]
        for _, fn in todo:
            fn()  # type: ignore[operator]
        return len(todo)


def test_scheduler_mode_starts_no_threads_and_flushes_when_told() -> None:
    import threading

    before = threading.active_count()
    disk, sched = NodeDisk(), Manual()
    cfg = StorageConfig(memtable_bytes=4096, compaction_min_threshold=2)
    e = Engine.open("/db", cfg, fs=disk.view(), scheduler=sched)
    assert threading.active_count() == before
    for i in range(400):
        e.put(b"k%04d" % i, b"v" * 40)  # batch mode: syncs inline
    assert any(k == "flush" for k, _ in sched.queue)
    sched.run("flush")
    sched.run("compact")
    assert e.stats()["flushes"] > 0 and e.get(b"k0001") == b"v" * 40
    e.close()


def test_async_put_acks_only_after_the_deferred_group_sync_and_crash_drops_the_rest() -> None:
    loop = SimLoop()
    disk = NodeDisk()

    class Later:
        def defer(self, kind: str, fn, delay: float = 0.0) -> None:
            loop.call_later(delay + (0.005 if kind == "sync" else 0.0), fn)

    async def main() -> None:
        e = Engine.open("/db", StorageConfig(), fs=disk.view(), scheduler=Later())
        t0 = loop.time()
        await asyncio.gather(e.aput(b"a", b"1"), e.aput(b"b", b"2"))  # one group commit
        assert loop.time() - t0 >= 0.005 and e.stats()["fsyncs"] == 1
        e._apply(b"c", KIND_PUT, b"3", b"3")  # appended, never synced
        disk.crash()

    loop.run_until_complete(main())
    loop.close()
    e2 = Engine.open("/db", StorageConfig(), fs=disk.view(), scheduler=Manual())
    assert (e2.get(b"a"), e2.get(b"b"), e2.get(b"c")) == (b"1", b"2", None)
    e2.close()


def test_scheduler_mode_compacts_at_open_as_the_compactor_thread_does() -> None:
    """Each restart replays the commit log into a small table; without a compaction at open
    (the thread mode's compactor checks at start) they pile up and every read folds them."""
    disk = NodeDisk()
    cfg = StorageConfig(compaction_min_threshold=4)
    for life in range(5):  # five lives, each leaving one replayed table behind
        e = Engine.open("/db", cfg, fs=disk.view(), scheduler=Manual())
        e.put(b"k%d" % life, b"v")
        disk.crash()  # the put was synced (batch mode); the next open replays it
    sched = Manual()
    e = Engine.open("/db", cfg, fs=disk.view(), scheduler=sched)
    tables = len(e._view[2])
    assert tables >= 4
    assert sched.run("compact") == 1
    assert len(e._view[2]) < tables and e.stats()["compactions"] >= 1
    assert [e.get(b"k%d" % i) for i in range(5)] == [b"v"] * 5
    e.close()
