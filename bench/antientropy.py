"""Anti-entropy cost: time and bytes to repair a 1% divergence over 100k and 1M keys.

Two storage engines in one process (merge = the version-set join, as on a node), one the
initiator and one the peer; the peer answers through :class:`ringkv.repair.Responder`
and every message is msgpack-encoded and decoded, so the byte counts are those of the
wire bodies (the 4-byte frame header and request id per message are not counted). The
divergence: of every 100 keys one differs, a third missing on the peer, a third missing
on the initiator, a third with a newer version on the peer.

Reported per size: load time, the initiator's tree build, the peer's tree build (inside
``merkle_open``), the exchange (everything else: descent, key lists, scans of the
differing buckets, pulls and pushes), bytes each way, keys each way, round trips; then a
second session (must exchange 0 keys) and the equal roots check.

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
from ringkv import versions  # noqa: E402
from ringkv.config import StorageConfig  # noqa: E402
from ringkv.repair import Responder, build_tree, drive  # noqa: E402
from ringkv.ring import storage_key  # noqa: E402
from ringkv.storage.engine import Engine  # noqa: E402

VALUE = b"x" * 100


def open_engine(path: Path) -> Engine:
    cfg = StorageConfig(sync_mode="off", memtable_bytes=64 << 20)
    return Engine.open(str(path), cfg, merge=versions.merge_bytes)


def load(a: Engine, b: Engine, n: int, every: int) -> tuple[int, float]:
    """Fill both engines; returns (differing keys, seconds)."""
    t0 = time.perf_counter()
    base = versions.update(versions.EMPTY, {}, "n1", VALUE, 1.0)
    newer = versions.update(base, base[0], "n2", VALUE + b"!", 2.0)
    one, two = versions.encode(base), versions.encode(newer)
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


class Wire:
    """The peer behind a msgpack round trip, timing its tree builds."""

    def __init__(self, responder: Responder) -> None:
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


async def session(a: Engine, wire: Wire) -> dict:
    t0 = time.perf_counter()
    tree = build_tree(a, 0, 0)
    build_a = time.perf_counter() - t0
    wire.build_s, wire.by_method = 0.0, {}
    t1 = time.perf_counter()
    stats = await drive(ae.Session(tree), wire.call, a)
    total = time.perf_counter() - t1
    return {"build_initiator_s": round(build_a, 2), "build_peer_s": round(wire.build_s, 2),
            "exchange_s": round(total - wire.build_s, 2), "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received, "keys_sent": stats.keys_sent,
            "keys_received": stats.keys_received, "keys_compared": stats.keys_compared,
            "differing_buckets": stats.differing_buckets, "compare_depth": stats.compare_depth,
            "rounds": stats.rounds, "by_method": wire.by_method}


async def run(n: int, every: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ringkv-ae-"))
    a, b = open_engine(tmp / "a"), open_engine(tmp / "b")
    try:
        differing, load_s = load(a, b, n, every)
        wire = Wire(Responder(lambda: b))
        first = await session(a, wire)
        second = await session(a, wire)
        equal = build_tree(a, 0, 0, 0).root() == build_tree(b, 0, 0, 0).root()
        t0 = time.perf_counter()
        for i in range(0, n, max(1, n // 20000)):
            a.get(storage_key(b"key-%d" % i))
        get_us = (time.perf_counter() - t0) / len(range(0, n, max(1, n // 20000))) * 1e6
        return {"keys": n, "differing": differing, "load_s": round(load_s, 1), "first": first,
                "second": second, "roots_equal": equal, "engine_get_us": round(get_us, 1)}
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
