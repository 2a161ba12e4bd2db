"""Anti-entropy cost: time and bytes to repair a 1% divergence over 100k and 1M keys.

Two storage engines in one process (merge = the version-set join, as on a node), one the
initiator and one the peer; the peer answers through :class:`ringkv.repair.Responder`
and every message is msgpack-encoded and decoded, so the byte counts are those of the
wire bodies (the 4-byte frame header and request id per message are not counted). The
divergence: of every 100 keys one differs, a third missing on the peer, a third missing
on the initiator, a third with a newer version on the peer.

Each side keeps its trees as a node does (``ringkv.merkle_cache``: a
:class:`~ringkv.write_tracker.TrackedEngine` notes every write, a ``TreeCache`` with the
default bounds keeps the trees). Reported per size:

- ``first``: the first repair, trees built from scratch by full scans (a node's first
  repair after a start);
- ``steady``: a new 1% divergence written (through the tracked engines) *after* the trees
  exist, then a repair: both trees are refreshed by rescanning the segments written since,
  not rebuilt (the steady state of a node running background repair). ``per_divergent_key_us``
  is its total time over the number of divergent keys;
- ``idle``: a third repair with no new divergence (it rescans only what the second one
  wrote), then the equal roots check by fresh full builds.

For each: the initiator's tree time (build or refresh), the peer's (inside
``merkle_open``), the exchange (everything else: descent, key lists, scans of the
differing buckets, pulls and pushes), bytes each way, keys each way, round trips, and the
leaves and keys the refreshes rescanned.

    .venv/bin/python bench/antientropy.py                 # 100k and 1M keys
    .venv/bin/python bench/antientropy.py --keys 100000   # one size
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ringkv import antientropy as ae  # noqa: E402
from ringkv import merkle, versions  # noqa: E402
from ringkv.config import RepairConfig, StorageConfig  # noqa: E402
from ringkv.merkle_cache import TreeCache  # noqa: E402
from ringkv.repair import Responder, TreeStore, build_tree, drive  # noqa: E402
from ringkv.ring import storage_key  # noqa: E402
from ringkv.storage.engine import Engine  # noqa: E402
from ringkv.write_tracker import TrackedEngine, WriteTracker  # noqa: E402

VALUE = b"x" * 100


def open_engine(path: Path) -> Engine:
    cfg = StorageConfig(sync_mode="off", memtable_bytes=64 << 20)
    return Engine.open(str(path), cfg, merge=versions.merge_bytes)


def versions_pair() -> tuple[bytes, bytes]:
    base = versions.update(versions.EMPTY, {}, "n1", VALUE, 1.0)
    newer = versions.update(base, base[0], "n2", VALUE + b"!", 2.0)
    return versions.encode(base), versions.encode(newer)


def load(a: Engine, b: Engine, n: int, every: int) -> tuple[int, float]:
    """Fill both engines; returns (differing keys, seconds)."""
    t0 = time.perf_counter()
    one, two = versions_pair()
    differing = 0
    for i in range(n):
        skey = storage_key(b"key-%d" % i)
        kind = (i // every) % 3 if i % every == 0 else -1
        differing += kind >= 0
        if kind != 1:
            a.put(skey, one)
        if kind != 0:
            b.put(skey, two if kind == 2 else one)
    a.flush()
    b.flush()
    return differing, time.perf_counter() - t0


def diverge(a: TrackedEngine, b: TrackedEngine, n: int, every: int) -> int:
    """A new divergence of one key in ``every``, written after the trees were built: a third
    new keys only on ``a``, a third new keys only on ``b``, a third existing keys updated on
    ``b`` only (those not already made to differ by ``load``)."""
    _, two = versions_pair()
    fresh = versions.encode(versions.update(versions.EMPTY, {}, "n3", VALUE + b"?", 3.0))
    count = 0
    for i in range(every // 2, n, every):
        kind = (i // every) % 3
        if kind == 2:
            b.put(storage_key(b"key-%d" % i), two)
        else:
            (a if kind == 0 else b).put(storage_key(b"new-%d" % i), fresh)
        count += 1
    return count


class Wire:
    """The peer behind a msgpack round trip, timing its tree builds."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.handlers, self.build_s = responder.handlers(), 0.0
        self.by_method: dict[str, list[int]] = {}  # method -> [calls, bytes out, bytes in]

    async def call(self, method: str, body: dict) -> dict:
        out = msgpack.packb(body)
        body = msgpack.unpackb(out)
        t0 = time.perf_counter()
        reply = self.handlers[method](body)
        if asyncio.iscoroutine(reply):
            reply = await reply
        if method == "merkle_open":
            self.build_s += time.perf_counter() - t0
        back = msgpack.packb(reply)
        row = self.by_method.setdefault(method, [0, 0, 0])
        row[0] += 1
        row[1] += len(out)
        row[2] += len(back)
        return msgpack.unpackb(back)


async def session(store: TreeStore, a: TrackedEngine, wire: Wire) -> dict:
    t0 = time.perf_counter()
    co = await store.checkout(0, 0, merkle.DEFAULT_DEPTH)
    tree_a = time.perf_counter() - t0
    assert co.tree is not None
    before = dict(wire.responder.store.view())
    wire.build_s, wire.by_method = 0.0, {}
    t1 = time.perf_counter()
    try:
        stats = await drive(ae.Session(co.tree, ae.Params()), wire.call, a)
    finally:
        store.checkin(co)
    total = time.perf_counter() - t1
    peer = wire.responder.store.view()
    return {"total_s": round(tree_a + total, 3),
            "tree_initiator_s": round(tree_a, 3), "tree_peer_s": round(wire.build_s, 3),
            "initiator": co.reason if co.buckets is None else "refresh",
            "exchange_s": round(total - wire.build_s, 3), "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received, "keys_sent": stats.keys_sent,
            "keys_received": stats.keys_received, "keys_compared": stats.keys_compared,
            "differing_buckets": stats.differing_buckets, "compare_depth": stats.compare_depth,
            "rounds": stats.rounds,
            "rescanned_initiator": {"leaves": len(co.buckets) if co.buckets is not None else None,
                                    "keys": co.keys_rescanned},
            "rescanned_peer": {"leaves": peer["leaves_rescanned"] - before["leaves_rescanned"],
                               "keys": peer["keys_rescanned"] - before["keys_rescanned"],
                               "full_builds": peer["full_builds"] - before["full_builds"]},
            "by_method": wire.by_method}


def tracked(engine: Engine) -> tuple[TrackedEngine, TreeStore]:
    cfg = RepairConfig()
    tracker = WriteTracker()
    te = TrackedEngine(engine, tracker)
    cache = TreeCache(tracker, cfg.tree_cache_trees, cfg.tree_cache_bytes, cfg.tree_max_age_s)
    return te, TreeStore(lambda: te, cache)


async def run(n: int, every: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ringkv-ae-"))
    a, b = open_engine(tmp / "a"), open_engine(tmp / "b")
    try:
        differing, load_s = load(a, b, n, every)
        ta, store_a = tracked(a)
        tb, store_b = tracked(b)
        wire = Wire(Responder(lambda: tb, store=store_b))
        first = await session(store_a, ta, wire)
        t0 = time.perf_counter()
        second_div = diverge(ta, tb, n, every)
        diverge_s = time.perf_counter() - t0
        steady = await session(store_a, ta, wire)
        steady["divergent_keys"] = second_div
        steady["per_divergent_key_us"] = round(steady["total_s"] / second_div * 1e6, 1)
        idle = await session(store_a, ta, wire)
        equal = build_tree(a, 0, 0, 0).root() == build_tree(b, 0, 0, 0).root()
        return {"keys": n, "differing": differing, "load_s": round(load_s, 1),
                "diverge_s": round(diverge_s, 2), "first": first, "steady": steady,
                "idle": idle, "roots_equal": equal,
                "tree_cache": {"initiator": store_a.view(), "peer": store_b.view()}}
    finally:
        a.close()
        b.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--every", type=int, default=100, help="one key in this many differs")
    args = parser.parse_args()
    for n in args.keys:
        print(json.dumps(asyncio.run(run(n, args.every))), flush=True)


if __name__ == "__main__":
    main()
