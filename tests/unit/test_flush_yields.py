"""A flush gives the GIL up as it goes (docs/decisions.md D35): a node's event loop shares
the process with the flusher thread, and compiled code (the memtable's sort, the SSTable
writer's bulk path) never hands the GIL over on its own, so one long call stalled every
request for hundreds of milliseconds. Here another thread must get to run while a big
memtable is sorted, and a flush cut into slices must write exactly what one call did."""

from __future__ import annotations

import os
import random
import sys
import threading
import time

from ringkv.config import StorageConfig
from ringkv.storage import Engine
from ringkv.storage.background import FLUSH_SLICE_KEYS
from ringkv.storage.memtable import SORT_RUN_KEYS, Memtable


def test_sorting_a_big_memtable_lets_another_thread_run():
    rng = random.Random(7)
    keys = [rng.randbytes(16) for _ in range(12 * SORT_RUN_KEYS)]
    t0 = time.perf_counter()
    plain = sorted(keys)  # one C call: how long it would hold the GIL
    one_call = time.perf_counter() - t0
    m = Memtable()
    for k in keys:
        m.data[k] = b"v"
    seen: list[float] = []
    stop = threading.Event()

    def other_thread() -> None:  # stands in for the event loop: wants the GIL all along
        while not stop.is_set():
            seen.append(time.perf_counter())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    t = threading.Thread(target=other_thread)
    t.start()
    try:
        while not seen:
            time.sleep(0.001)
        start = time.perf_counter()
        got = m.sorted_keys()
        end = time.perf_counter()
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(interval)
    assert got == plain
    assert m.sorted_keys() is got  # computed once
    marks = [start] + [x for x in seen if start < x < end] + [end]
    longest_stall = max(b - a for a, b in zip(marks, marks[1:]))
    assert longest_stall < one_call / 2, (longest_stall, one_call)


def test_a_flush_in_slices_writes_every_key_in_order(tmp_path):
    n = 5 * FLUSH_SLICE_KEYS + 17  # several slices and a partial one
    rng = random.Random(3)
    items = {rng.randbytes(rng.randint(1, 40)): os.urandom(rng.randint(0, 300)) for _ in range(n)}
    with Engine.open(str(tmp_path), StorageConfig(sync_mode="off")) as e:
        for k, v in items.items():
            e.put(k, v)
        e.flush()
        assert e.stats()["sstables"] == 1 and e.stats()["memtable_bytes"] == 0
        assert list(e.scan()) == sorted(items.items())
        assert all(e.get(k) == v for k, v in items.items())
    with Engine.open(str(tmp_path), StorageConfig(sync_mode="off")) as e:  # and after a restart
        assert list(e.scan()) == sorted(items.items())
