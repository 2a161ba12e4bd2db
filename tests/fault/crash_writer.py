"""Child process for test_crash_kill9.py (run as a script, killed with SIGKILL).

Opens the engine in ``batch`` mode with a tiny memtable and a low compaction threshold so
flushes and compactions run all the time, then writes puts and deletes from several
threads forever (``threads`` mode: blocking ``put``/``delete``) or from as many coroutines
on one event loop (``async`` mode: ``aput``/``adelete``, whose durability waits go to the
native fsync thread when it is built, D30). Each thread owns its keys and reports on stdout, one line per os.write
(atomic on a pipe): ``I <thread> <key> <value|->`` before an op and ``A <thread>`` once the
op returned (acknowledged). A monitor line ``S <flushing> <compacting> <flushes>
<compactions> <fsync thread> <preallocated segments>`` is printed every few milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time

from ringkv.config import StorageConfig
from ringkv.storage import Engine

# segment_bytes: the commit log rolls onto a preallocated segment (D43) every few KB, so
# kills land in writes over a preallocated file's zeros and in rolls onto one too
CONFIG = StorageConfig(sync_mode="batch", memtable_bytes=4096, block_bytes=512,
                       compaction_min_threshold=2, max_pending_flushes=2,
                       segment_bytes=8192, preallocate_segments=True)
KEYS_PER_THREAD = 25


def emit(line: str) -> None:
    os.write(1, (line + "\n").encode())


def ops(t: int, seed: int):
    """Writer ``t``'s endless ops, each ``(key, value or None for a delete)``, each
    reported (``I`` line) before it is yielded to be done."""
    rnd = random.Random(seed * 1000 + t)
    n = 0
    while True:
        key = f"t{t}-k{rnd.randrange(KEYS_PER_THREAD)}"
        n += 1
        if rnd.random() < 0.25:
            emit(f"I {t} {key} -")
            yield key.encode(), None
        else:
            val = f"{seed}.{t}.{n}" + "x" * rnd.randrange(60)
            emit(f"I {t} {key} {val}")
            yield key.encode(), val.encode()


def writer(e: Engine, t: int, seed: int) -> None:
    for key, val in ops(t, seed):
        if val is None:
            e.delete(key)
        else:
            e.put(key, val)
        emit(f"A {t}")


async def async_writer(e: Engine, t: int, seed: int) -> None:
    for key, val in ops(t, seed):
        if val is None:
            await e.adelete(key)
        else:
            await e.aput(key, val)
        emit(f"A {t}")


def status_line(e: Engine) -> str:
    st = e.stats()
    return (f"S {st['flushing']} {st['compacting']} {st['flushes']} {st['compactions']} "
            f"{st['fsync_thread']} {st['commitlog_preallocated_segments']}")


async def async_main(e: Engine, writers: int, seed: int) -> None:
    for t in range(writers):
        asyncio.ensure_future(async_writer(e, t, seed))
    while True:
        emit(status_line(e))
        await asyncio.sleep(0.003)


def main() -> None:
    path, seed, writers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    mode = sys.argv[4] if len(sys.argv) > 4 else "threads"
    e = Engine.open(path, CONFIG)
    emit("READY")
    if mode == "async":
        asyncio.run(async_main(e, writers, seed))
        return
    for t in range(writers):
        threading.Thread(target=writer, args=(e, t, seed), daemon=True).start()
    while True:
        emit(status_line(e))
        time.sleep(0.003)


if __name__ == "__main__":
    main()
