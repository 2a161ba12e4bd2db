#!/usr/bin/env python3
"""Storage engine benchmark: ringkv's LSM engine against RocksDB, LevelDB, LMDB and SQLite.

The same workload runs on every engine, each called from Python the way a Python user
would (one call per operation, the library's default tuning, bytes in and bytes out):

  put        N random puts, 16-byte random keys, 100-byte random values, unsynced
             (each put is individually committed and survives a process crash, not a
             power loss): ringkv sync_mode "off"; RocksDB/LevelDB default write options
             (WAL, no fsync); LMDB sync=False, one write txn per put; SQLite WAL with
             synchronous=NORMAL, autocommit (one transaction per put).
  get        N gets of present keys in random order, after moving everything into the
             engine's on-disk structure: ringkv flush() + compact(); RocksDB flush +
             compact_range; LevelDB compact_range (flushes the memtable first); LMDB
             env.sync; SQLite wal_checkpoint(TRUNCATE). Not timed.
  miss       N gets of absent keys (random 16-byte keys never written).
  scan       one full ordered scan of the N keys (keys/s).
  durable1   durable puts from 1 writer thread into a fresh store.
  durable64  durable puts from 64 concurrent writer threads into the same store:
             ringkv sync_mode "batch" (group commit); RocksDB WriteOptions(sync=True);
             LevelDB put(sync=True); LMDB default durable commits, one txn per put;
             SQLite WAL + synchronous=FULL, one connection per thread, one transaction
             per put. Each writer does up to K puts and stops at T seconds; ops/s is
             what completed over the wall time until the last writer returned.

Each (engine, repetition) runs in its own fresh subprocess and its own fresh temp dir
under --tmp; repetitions interleave the engines, and each figure is the median over
repetitions. ``writes_per_fsync`` is counted from ringkv's engine stats (delta of
``writes_synced`` over delta of ``fsyncs`` during the 64-writer phase). Peak memory: each
engine loads --memory-keys keys (1M by default) in a separate subprocess, then settles
and reads back 10% of them; its peak RSS (VmHWM) is reported beside the others.

Usage:
  python bench/storage.py             # full run: 500k ops, 3 repetitions, 1M keys for memory
  python bench/storage.py --quick     # < 60 s: 50k ops, 1 repetition, 1.5 s durable phases
  python bench/storage.py --engines ringkv,rocksdb --reps 5 --markdown --out results.json
  python bench/storage.py --profile   # cProfile ringkv's put/get/miss paths in-process

The last line of every run is one line of JSON (ratios ringkv/peer plus raw ops/s).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

ENGINE_NAMES = ("ringkv", "rocksdb", "leveldb", "lmdb", "sqlite")
PEERS = ("rocksdb", "leveldb", "lmdb", "sqlite")
PHASES = ("put", "get", "miss", "scan", "durable1", "durable64")
KEY_BYTES = 16
VALUE_BYTES = 100
LMDB_MAP_SIZE = 16 << 30  # sparse; LMDB needs a fixed upper bound up front
# RocksDB and LevelDB ship without bloom filters; --peer-bloom BITS gives both BITS bits/key.
PEER_BLOOM_BITS = 0

# The targets: (json name, phase, peer, minimum ratio ringkv/peer).
TARGETS = (
    ("get_vs_rocksdb", "get", "rocksdb", 0.35),
    ("miss_vs_rocksdb", "miss", "rocksdb", 0.5),
    ("put_vs_rocksdb", "put", "rocksdb", 0.4),
    ("durable64_vs_rocksdb", "durable64", "rocksdb", 1.0),
    ("durable64_vs_sqlite", "durable64", "sqlite", 3.0),
)
WPF_TARGET = 20.0


# --------------------------------------------------------------------------- adapters
# Each adapter opens one store in a directory; put_fn()/get_fn() return the callable a
# thread uses for one operation (SQLite needs a connection per thread).


def ringkv_engine_class():
    try:
        from ringkv.storage import Engine  # type: ignore[attr-defined]
    except ImportError:
        from ringkv.storage.engine import Engine
    return Engine


class RingkvStore:
    name = "ringkv"

    def __init__(self, path: str, durable: bool):
        from ringkv.config import StorageConfig

        config = StorageConfig(sync_mode="batch" if durable else "off")
        self.db = ringkv_engine_class().open(path, config)

    def put_fn(self) -> Callable[[bytes, bytes], Any]:
        return self.db.put

    def get_fn(self) -> Callable[[bytes], bytes | None]:
        return self.db.get

    def settle(self) -> None:
        self.db.flush()
        self.db.compact()

    def scan(self) -> int:
        n = 0
        for _kv in self.db.scan():
            n += 1
        return n

    def stats(self) -> dict:
        return {k: v for k, v in dict(self.db.stats()).items() if isinstance(v, (int, float))}

    def close(self) -> None:
        self.db.close()


class RocksStore:
    name = "rocksdb"

    def __init__(self, path: str, durable: bool):
        from rocksdict import Options, Rdict, WriteOptions

        opts = Options(raw_mode=True)  # raw: plain bytes keys and values
        if PEER_BLOOM_BITS:
            from rocksdict import BlockBasedOptions

            table = BlockBasedOptions()
            table.set_bloom_filter(PEER_BLOOM_BITS, False)
            opts.set_block_based_table_factory(table)
        self.db = Rdict(path, opts)
        if durable:
            wo = WriteOptions()
            wo.sync = True
            self.db.set_write_options(wo)

    def put_fn(self):
        return self.db.put

    def get_fn(self):
        return self.db.get

    def settle(self) -> None:
        self.db.flush(True)
        self.db.compact_range(None, None)

    def scan(self) -> int:
        n = 0
        for _kv in self.db.items():
            n += 1
        return n

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        self.db.close()


class LevelStore:
    name = "leveldb"

    def __init__(self, path: str, durable: bool):
        import plyvel

        self.db = plyvel.DB(path, create_if_missing=True, bloom_filter_bits=PEER_BLOOM_BITS)
        self.durable = durable

    def put_fn(self):
        return functools.partial(self.db.put, sync=True) if self.durable else self.db.put

    def get_fn(self):
        return self.db.get

    def settle(self) -> None:
        self.db.compact_range()

    def scan(self) -> int:
        n = 0
        for _kv in self.db:
            n += 1
        return n

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        self.db.close()


class LmdbStore:
    name = "lmdb"

    def __init__(self, path: str, durable: bool):
        import lmdb

        # durable: LMDB's defaults (sync=True, metasync=True): every commit is fsync'd.
        self.env = lmdb.open(path, map_size=LMDB_MAP_SIZE, sync=durable, max_readers=256)

    def put_fn(self):
        begin = self.env.begin

        def put(key: bytes, value: bytes) -> None:
            with begin(write=True) as txn:  # one transaction per put
                txn.put(key, value)

        return put

    def get_fn(self):
        begin = self.env.begin

        def get(key: bytes):
            with begin() as txn:  # one read transaction per get
                return txn.get(key)

        return get

    def settle(self) -> None:
        self.env.sync(True)

    def scan(self) -> int:
        n = 0
        with self.env.begin() as txn:
            for _kv in txn.cursor():
                n += 1
        return n

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        self.env.close()


class SqliteStore:
    name = "sqlite"
    PUT = "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)"
    GET = "SELECT v FROM kv WHERE k = ?"

    def __init__(self, path: str, durable: bool):
        self.file = os.path.join(path, "kv.sqlite")
        self.sync = "FULL" if durable else "NORMAL"
        self.local = threading.local()
        self.conns: list = []
        self.lock = threading.Lock()
        self.conn().execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")

    def conn(self):
        import sqlite3

        c = getattr(self.local, "conn", None)
        if c is None:
            # autocommit (isolation_level=None): every INSERT is its own transaction
            c = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False, timeout=600)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute(f"PRAGMA synchronous={self.sync}")
            self.local.conn = c
            with self.lock:
                self.conns.append(c)
        return c

    def put_fn(self):
        execute, sql = self.conn().execute, self.PUT

        def put(key: bytes, value: bytes) -> None:
            execute(sql, (key, value))

        return put

    def get_fn(self):
        execute, sql = self.conn().execute, self.GET

        def get(key: bytes):
            row = execute(sql, (key,)).fetchone()
            return row[0] if row else None

        return get

    def settle(self) -> None:
        self.conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def scan(self) -> int:
        n = 0
        for _kv in self.conn().execute("SELECT k, v FROM kv ORDER BY k"):
            n += 1
        return n

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        for c in self.conns:
            c.close()


STORES = {"ringkv": RingkvStore, "rocksdb": RocksStore, "leveldb": LevelStore,
          "lmdb": LmdbStore, "sqlite": SqliteStore}


def engine_available(name: str) -> str | None:
    """None if the engine can be imported, else the reason it cannot."""
    try:
        if name == "ringkv":
            ringkv_engine_class()
        elif name == "rocksdb":
            import rocksdict  # noqa: F401
        elif name == "leveldb":
            import plyvel  # noqa: F401
        elif name == "lmdb":
            import lmdb  # noqa: F401
        elif name == "sqlite":
            import sqlite3  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return None


# --------------------------------------------------------------------------- workload


def gen_keys(n: int, seed: int) -> list[bytes]:
    blob = random.Random(seed).randbytes(KEY_BYTES * n)
    return [blob[i:i + KEY_BYTES] for i in range(0, KEY_BYTES * n, KEY_BYTES)]


def gen_values(n: int, seed: int) -> list[bytes]:
    blob = random.Random(seed).randbytes(VALUE_BYTES * n)
    return [blob[i:i + VALUE_BYTES] for i in range(0, VALUE_BYTES * n, VALUE_BYTES)]


def run_writers(store, key_lists: list[list[bytes]], values: list[bytes], seconds: float) -> tuple[int, float]:
    """Start len(key_lists) writer threads; each puts its keys until done or `seconds` pass.

    Returns (puts completed, wall seconds from release until the last writer returned).
    """
    n = len(key_lists)
    counts = [0] * n
    errors: list[BaseException] = []
    ready = threading.Barrier(n + 1)
    go = threading.Event()
    nv = len(values)

    def writer(i: int) -> None:
        try:
            put = store.put_fn()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            ready.wait()
            return
        keys = key_lists[i]
        ready.wait()
        go.wait()
        now = time.monotonic
        deadline = now() + seconds
        c = 0
        try:
            for j, key in enumerate(keys):
                put(key, values[j % nv])
                c += 1
                if now() >= deadline:
                    break
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        counts[i] = c

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"writer failed: {errors[0]!r}") from errors[0]
    return sum(counts), elapsed


# engine.stats() keys that are gauges or ratios, not counters: reported as-is, not as deltas
GAUGES = ("sstables_per_read", "writes_per_fsync", "space_amplification", "memtable_bytes",
          "immutable_memtables", "sstables", "sstable_bytes", "sstable_entries", "block_cache_bytes",
          "last_seq", "flushed_seq", "flushing", "compacting")


def stat_delta(before: dict, after: dict) -> dict:
    """Counter deltas between two engine.stats() snapshots (gauges: the later value)."""
    return {k: (after[k] if k in GAUGES else after[k] - before.get(k, 0))
            for k in after if isinstance(after[k], (int, float))}


def wpf(delta: dict) -> float | None:
    fs = delta.get("fsyncs")
    ws = delta.get("writes_synced")
    if not fs or ws is None:
        return None
    return ws / fs


def worker_run(engine: str, a: argparse.Namespace, profile: bool = False) -> dict:
    """One repetition of every phase on one engine (runs inside a fresh subprocess)."""
    store_cls = STORES[engine]
    n = a.ops
    keys = gen_keys(n, a.seed)
    values = gen_values(n, a.seed + 1)
    missing = gen_keys(n, a.seed + 2)
    order = list(range(n))
    random.Random(a.seed + 3).shuffle(order)
    present = [keys[i] for i in order]
    d1_keys = [gen_keys(a.durable1_ops, a.seed + 4)]
    d64_flat = gen_keys(a.writers * a.durable64_ops, a.seed + 5)
    d64_keys = [d64_flat[i::a.writers] for i in range(a.writers)]
    out: dict[str, Any] = {"engine": engine, "ops": {}, "seconds": {}, "info": {}}
    ops, secs, info = out["ops"], out["seconds"], out["info"]
    prof = None
    if profile:
        import cProfile

        prof = {p: cProfile.Profile() for p in ("put", "get", "miss")}

    def timed(phase: str, fn: Callable[[], int]) -> None:
        p = prof.get(phase) if prof else None
        if p:
            p.enable()
        t0 = time.perf_counter()
        count = fn()
        dt = time.perf_counter() - t0
        if p:
            p.disable()
        ops[phase] = count / dt
        secs[phase] = dt

    tmp = a.tmp or None
    # --- unsynced store: put, settle, get, miss, scan
    path = tempfile.mkdtemp(prefix=f"ringkv-bench-{engine}-", dir=tmp)
    try:
        store = store_cls(path, durable=False)
        put = store.put_fn()

        def do_put() -> int:
            for k, v in zip(keys, values):
                put(k, v)
            return n

        timed("put", do_put)
        t0 = time.perf_counter()
        store.settle()
        info["settle_seconds"] = time.perf_counter() - t0
        info["disk_bytes_after_settle"] = C.dir_bytes(path)
        s_loaded = store.stats()
        get = store.get_fn()

        def do_get() -> int:
            for k in present:
                get(k)
            return n

        def do_miss() -> int:
            for k in missing:
                get(k)
            return n

        timed("get", do_get)
        s_get = store.stats()
        timed("miss", do_miss)
        s_miss = store.stats()
        # correctness spot check (not timed)
        rng = random.Random(a.seed + 6)
        for i in rng.sample(range(n), min(n, 2000)):
            got = get(keys[i])
            if got is None or bytes(got) != values[i]:
                raise AssertionError(f"{engine}: wrong value for present key #{i}: {got!r}")
        for k in rng.sample(missing, min(n, 2000)):
            if get(k) is not None:
                raise AssertionError(f"{engine}: found a value for an absent key")

        def do_scan() -> int:
            c = store.scan()
            if c != n:
                raise AssertionError(f"{engine}: scan returned {c} keys, expected {n}")
            return c

        timed("scan", do_scan)
        if s_loaded:
            out["stats_get"] = stat_delta(s_loaded, s_get)
            out["stats_miss"] = stat_delta(s_get, s_miss)
            out["stats_after_load"] = s_loaded
        store.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    if prof:
        out["_profiles"] = prof
        return out
    # --- durable store: 1 writer, then 64 writers
    path = tempfile.mkdtemp(prefix=f"ringkv-bench-{engine}-durable-", dir=tmp)
    try:
        store = store_cls(path, durable=True)
        s0 = store.stats()
        done, dt = run_writers(store, d1_keys, values, a.durable_seconds)
        ops["durable1"], secs["durable1"], info["durable1_puts"] = done / dt, dt, done
        s1 = store.stats()
        done, dt = run_writers(store, d64_keys, values, a.durable_seconds)
        ops["durable64"], secs["durable64"], info["durable64_puts"] = done / dt, dt, done
        s2 = store.stats()
        if s0:
            d1, d64 = stat_delta(s0, s1), stat_delta(s1, s2)
            out["stats_durable1"], out["stats_durable64"] = d1, d64
            out["writes_per_fsync_1"] = wpf(d1)
            out["writes_per_fsync_64"] = wpf(d64)
        store.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    info["worker_peak_rss_kb"] = C.peak_rss_kb()
    return out


def worker_memory(engine: str, a: argparse.Namespace) -> dict:
    """Load a.memory_keys keys, settle, read back 10%; report peak RSS (own subprocess)."""
    store_cls = STORES[engine]
    engine_available(engine)  # import the library before the baseline
    baseline = C.rss_kb()
    path = tempfile.mkdtemp(prefix=f"ringkv-bench-mem-{engine}-", dir=a.tmp or None)
    n = a.memory_keys
    try:
        store = store_cls(path, durable=False)
        put = store.put_fn()
        rng = random.Random(a.seed + 10)
        rb = rng.randbytes
        t0 = time.perf_counter()
        for _ in range(n):
            put(rb(KEY_BYTES), rb(VALUE_BYTES))
        load_s = time.perf_counter() - t0
        peak_load = C.peak_rss_kb()
        store.settle()
        disk = C.dir_bytes(path)
        get = store.get_fn()
        rng = random.Random(a.seed + 10)
        rb = rng.randbytes
        found = 0
        for i in range(n):
            k, _v = rb(KEY_BYTES), rb(VALUE_BYTES)
            if i % 10 == 0 and get(k) is not None:
                found += 1
        if found != (n + 9) // 10:
            raise AssertionError(f"{engine}: read back {found} of {(n + 9) // 10} keys")
        peak = C.peak_rss_kb()
        store.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return {"engine": engine, "keys": n, "baseline_rss_kb": baseline, "peak_rss_kb": peak,
            "peak_rss_load_kb": peak_load, "disk_bytes": disk, "load_seconds": load_s}


# --------------------------------------------------------------------------- orchestration


def spawn(kind: str, engine: str, a: argparse.Namespace, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), f"--_worker={kind}", f"--_engine={engine}",
           f"--ops={a.ops}", f"--seed={a.seed}", f"--durable-seconds={a.durable_seconds}",
           f"--durable1-ops={a.durable1_ops}", f"--durable64-ops={a.durable64_ops}",
           f"--writers={a.writers}", f"--memory-keys={a.memory_keys}", f"--peer-bloom={a.peer_bloom}"]
    if a.tmp:
        cmd.append(f"--tmp={a.tmp}")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"engine": engine, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"engine": engine, "error": f"exit {p.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def summarize(a: argparse.Namespace, engines: list[str], runs: dict[str, list[dict]],
              mem: dict[str, dict], skipped: dict[str, str], wall: float) -> dict:
    med: dict[str, dict[str, float]] = {}
    for e in engines:
        ok = [r for r in runs[e] if "error" not in r]
        med[e] = {ph: C.median(r["ops"].get(ph) for r in ok) for ph in PHASES} if ok else {}
    rk = med.get("ringkv", {})
    ratios: dict[str, dict[str, float]] = {}
    for peer in PEERS:
        if peer in med and med[peer] and rk:
            ratios[peer] = {ph: (rk[ph] / med[peer][ph]) if med[peer].get(ph) else float("nan")
                            for ph in PHASES}
    wpf64 = C.median(r.get("writes_per_fsync_64") for r in runs.get("ringkv", []) if "error" not in r)
    wpf1 = C.median(r.get("writes_per_fsync_1") for r in runs.get("ringkv", []) if "error" not in r)

    def clean(x):
        return None if x is None or x != x else round(x, 4 if x < 100 else 1)

    summary: dict[str, Any] = {"bench": "storage", "quick": a.quick, "ops": a.ops, "reps": a.reps,
                               "writers": a.writers, "durable_seconds": a.durable_seconds,
                               "peer_bloom_bits": a.peer_bloom}
    for name, phase, peer, _ in TARGETS:
        summary[name] = clean(ratios.get(peer, {}).get(phase))
    summary["writes_per_fsync"] = clean(wpf64)
    summary["writes_per_fsync_1writer"] = clean(wpf1)
    met = {name: (summary[name] is not None and summary[name] >= lim) for name, _p, _q, lim in TARGETS}
    met["writes_per_fsync"] = summary["writes_per_fsync"] is not None and summary["writes_per_fsync"] >= WPF_TARGET
    summary["targets_met"] = met
    summary["ops_per_s"] = {e: {ph: clean(v) for ph, v in m.items()} for e, m in med.items()}
    summary["memory_keys"] = a.memory_keys if mem else 0
    summary["peak_rss_mb"] = {e: round(m["peak_rss_kb"] / 1024, 1) for e, m in mem.items() if "peak_rss_kb" in m}
    summary["errors"] = {e: [r["error"] for r in runs[e] if "error" in r] for e in engines
                         if any("error" in r for r in runs[e])}
    summary["errors"].update({f"memory:{e}": m["error"] for e, m in mem.items() if "error" in m})
    summary["skipped"] = skipped
    summary["wall_seconds"] = round(wall, 1)
    summary["_median"], summary["_ratios"] = med, ratios
    return summary


def report(a: argparse.Namespace, engines: list[str], runs, mem, s: dict) -> None:
    med, ratios = s["_median"], s["_ratios"]
    md = a.markdown
    print()
    print(f"# ringkv storage benchmark — {C.machine_line()}")
    print(f"# {a.ops:,} ops per phase, 16-byte keys, 100-byte values, median of {a.reps} rep(s); "
          f"durable phases: up to {a.durable1_ops:,} puts (1 writer) / {a.durable64_ops:,} per writer "
          f"({a.writers} writers), each stopped at {a.durable_seconds:g} s; RocksDB/LevelDB bloom filters: "
          f"{f'{a.peer_bloom} bits/key' if a.peer_bloom else 'none (library defaults)'}")
    print()
    heads = ["ops/s", "put", "get", "miss", "scan", "durable1", f"durable{a.writers}"]
    rows = [[e] + [C.fmt_ops(med[e].get(ph)) if med[e] else "failed" for ph in PHASES] for e in engines]
    print(C.table(heads, rows, md))
    if ratios:
        print()
        rrows = [[f"ringkv / {p}"] + [C.fmt_ratio(ratios[p].get(ph)) for ph in PHASES] for p in PEERS if p in ratios]
        print(C.table(["ratio"] + heads[1:], rrows, md))
    if a.reps > 1:
        print()
        spread = []
        for e in engines:
            ok = [r for r in runs[e] if "error" not in r]
            spread.append([e] + [" / ".join(C.fmt_ops(r["ops"].get(ph)) for r in ok) for ph in PHASES])
        print("each repetition:")
        print(C.table(heads, spread, md))
    if "ringkv" in engines:
        print()
        print(f"group commit (ringkv, counted from engine stats): writes_per_fsync = "
              f"{s['writes_per_fsync']} at {a.writers} writers, {s['writes_per_fsync_1writer']} at 1 writer")
    if mem:
        print()
        note = "" if a.memory_keys >= 1_000_000 else (
            f"  (NOTE: {a.memory_keys:,} keys, not the 1M of the full run{' (--quick)' if a.quick else ''})")
        print(f"peak memory, {a.memory_keys:,} keys x 100-byte values, each engine in its own process{note}")
        mrows = []
        for e in engines:
            m = mem.get(e, {})
            if "peak_rss_kb" in m:
                mrows.append([e, f"{m['peak_rss_kb'] / 1024:,.0f}", f"{m['peak_rss_load_kb'] / 1024:,.0f}",
                              f"{m['baseline_rss_kb'] / 1024:,.0f}",
                              f"{(m['peak_rss_kb'] - m['baseline_rss_kb']) / 1024:,.0f}",
                              f"{m['disk_bytes'] / 1e6:,.0f}", f"{m['keys'] / m['load_seconds']:,.0f}"])
            else:
                mrows.append([e, m.get("error", "-"), "", "", "", "", ""])
        print(C.table(["engine", "peak RSS MiB", "peak in load", "baseline MiB", "peak - baseline", "disk MB",
                       "load puts/s"],
                      mrows, md))
    print()
    verdict = []
    for name, phase, peer, lim in TARGETS:
        v = s[name]
        verdict.append([name, f">= {lim}", "-" if v is None else f"{v:.2f}",
                        "n/a" if v is None else ("holds" if v >= lim else "MISSES")])
    v = s["writes_per_fsync"]
    verdict.append(["writes_per_fsync", f">= {WPF_TARGET:g}", "-" if v is None else f"{v:.1f}",
                    "n/a" if v is None else ("holds" if v >= WPF_TARGET else "MISSES")])
    print(C.table(["target", "wanted", "measured", "verdict"], verdict, md))
    for e, errs in s["errors"].items():
        print(f"error: {e}: {errs}")
    for e, why in s["skipped"].items():
        print(f"skipped: {e}: {why}")
    print(f"\nwall time {s['wall_seconds']} s")


def profile_ringkv(a: argparse.Namespace) -> None:
    import io
    import pstats

    out = worker_run("ringkv", a, profile=True)
    for phase, p in out["_profiles"].items():
        buf = io.StringIO()
        st = pstats.Stats(p, stream=buf)
        st.sort_stats("tottime").print_stats(a.profile_top)
        print(f"\n===== ringkv {phase}: {out['ops'][phase]:,.0f} ops/s under cProfile (sorted by tottime)")
        print(buf.getvalue())
    for k in ("stats_get", "stats_miss"):
        if k in out:
            print(k, json.dumps(out[k]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="finish within 60 s: 50k ops, 1 rep, 1.5 s durable phases, 50k keys for memory")
    ap.add_argument("--ops", type=int, default=None, help="ops per put/get/miss phase (default 500000; --quick 50000)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions, median reported (default 3; --quick 1)")
    ap.add_argument("--engines", default=",".join(ENGINE_NAMES), help="comma list of engines")
    ap.add_argument("--writers", type=int, default=64, help="concurrent writers in the second durable phase")
    ap.add_argument("--durable-seconds", type=float, default=None, help="time bound of each durable phase (default 5; --quick 1.5)")
    ap.add_argument("--durable1-ops", type=int, default=50_000, help="put bound of the 1-writer durable phase")
    ap.add_argument("--durable64-ops", type=int, default=2_000, help="put bound per writer of the many-writer durable phase")
    ap.add_argument("--memory-keys", type=int, default=None, help="keys loaded for peak memory (default 1000000; --quick 50000; 0 skips)")
    ap.add_argument("--peer-bloom", type=int, default=0, metavar="BITS",
                    help="give RocksDB and LevelDB bloom filters of BITS bits/key (default 0: their defaults, none)")
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--tmp", default="/tmp", help="parent dir of the fresh per-engine temp dirs")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    ap.add_argument("--out", help="also write all raw results (every rep, engine stats) to this JSON file")
    ap.add_argument("--profile", action="store_true", help="cProfile ringkv's put/get/miss in-process and exit")
    ap.add_argument("--profile-top", type=int, default=30)
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    ap.add_argument("--_engine", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    global PEER_BLOOM_BITS
    PEER_BLOOM_BITS = a.peer_bloom
    a.ops = a.ops or (50_000 if a.quick else 500_000)
    a.reps = a.reps or (1 if a.quick else 3)
    a.durable_seconds = a.durable_seconds or (1.5 if a.quick else 5.0)
    if a.memory_keys is None:
        a.memory_keys = 50_000 if a.quick else 1_000_000

    if a._worker == "run":
        print(json.dumps(worker_run(a._engine, a)))
        return 0
    if a._worker == "memory":
        print(json.dumps(worker_memory(a._engine, a)))
        return 0
    if a.profile:
        profile_ringkv(a)
        return 0

    t_start = time.perf_counter()
    wanted = [e.strip() for e in a.engines.split(",") if e.strip()]
    for e in wanted:
        if e not in STORES:
            ap.error(f"unknown engine {e!r}; known: {', '.join(ENGINE_NAMES)}")
    skipped = {e: why for e in wanted if (why := engine_available(e))}
    engines = [e for e in wanted if e not in skipped]
    for e, why in skipped.items():
        log(f"skipping {e}: {why}")
    timeout = 120 if a.quick else 3600
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for rep in range(a.reps):
        for e in engines:  # interleaved, so machine noise spreads over every engine
            t0 = time.perf_counter()
            r = spawn("run", e, a, timeout)
            runs[e].append(r)
            shown = r.get("error") or "  ".join(f"{ph} {C.fmt_ops(v)}" for ph, v in r["ops"].items())
            log(f"rep {rep + 1}/{a.reps} {e:8s} ({time.perf_counter() - t0:5.1f} s): {shown}")
    mem: dict[str, dict] = {}
    if a.memory_keys:
        for e in engines:
            t0 = time.perf_counter()
            mem[e] = spawn("memory", e, a, timeout)
            m = mem[e]
            shown = m.get("error") or f"peak RSS {m['peak_rss_kb'] / 1024:,.0f} MiB"
            log(f"memory {e:8s} ({time.perf_counter() - t0:5.1f} s): {shown}")
    s = summarize(a, engines, runs, mem, skipped, time.perf_counter() - t_start)
    report(a, engines, runs, mem, s)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"summary": {k: v for k, v in s.items() if not k.startswith("_")},
                       "machine": C.machine_line(), "runs": runs, "memory": mem}, f, indent=1, default=str)
    final = {k: v for k, v in s.items() if not k.startswith("_")}
    print(json.dumps(final, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
