"""The chaos workload: concurrent clients whose every write carries a unique value.

Each client (its own :class:`~ringkv.client.AsyncClient`, seeded) loops until the time or
op budget runs out, picking one of three writes:

- ``unique``: a blind put of value ``c<cid>.<seq>`` to a key no other op touches
  (``u/<cid>/<seq>``): such a value may never disappear;
- ``blind``: a blind put (no context) of a unique value to a shared key ``b/<k>``. The
  coordinating replica supersedes what *it* holds, so an older value may legitimately
  vanish; the checker then needs the new write's returned context to cover the old one's;
- ``rmw``: read-modify-write on a shared key ``r/<k>``: ``get`` at the read level, append
  a new unique token to the ids of the siblings read, ``put`` with the read's context. The
  op records the values it saw: those (and only those) it may supersede.

After an acknowledged write, with probability ``ryw_chance`` the same client reads the key
back at the read level and records whether the read's context covers the write's
(read-your-writes; asserted by the checker in ``strict`` mode with W + R > N).

Every op becomes one history record (a plain dict, JSON-ready): ``cid, seq, kind, key,
value, seen, ctx_in, ctx_out, status, t0, t1``. ``status`` is ``ok`` for an acknowledged
write, else the error's class name: such writes are of unknown outcome (they may have been
applied) and are never counted as lost.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from ringkv import versions
from ringkv.client import AsyncClient
from ringkv.errors import RingkvError


@dataclass
class WorkloadSpec:
    """What the workload does; every field has the value used by the quick run."""

    addresses: list[str]
    seed: int = 1
    clients: int = 6  # concurrent clients, each with its own connections
    duration_s: float = 40.0  # stop starting ops after this long
    max_ops: int = 4000  # and after this many ops in all
    rate: float = 60.0  # target ops per second over all clients (paced, not a hard cap)
    shared_keys: int = 8  # keys per shared class (blind, rmw): contention on purpose
    mix: tuple[float, float, float] = (0.35, 0.25, 0.40)  # unique, blind, rmw
    write_level: str = "QUORUM"
    read_level: str = "QUORUM"
    ryw_chance: float = 0.3  # share of acked writes followed by a read-back
    timeout_s: float = 2.0  # client RPC timeout
    retries: int = 1  # client retries of retriable errors
    stop: Any = field(default=None, repr=False)  # an asyncio.Event / threading.Event to end early


class Recorder:
    """Collects history records with times relative to the start."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.ops: list[dict] = []

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 4)


async def run(spec: WorkloadSpec) -> list[dict]:
    """Run the workload; the history of every op attempted."""
    rec = Recorder()
    budget = [spec.max_ops]
    end = time.monotonic() + spec.duration_s
    tasks = [asyncio.ensure_future(_client(spec, cid, rec, budget, end))
             for cid in range(spec.clients)]
    await asyncio.gather(*tasks)
    return rec.ops


async def _client(spec: WorkloadSpec, cid: int, rec: Recorder, budget: list[int],
                  end: float) -> None:
    rng = random.Random(f"{spec.seed}/{cid}")
    pause = spec.clients / spec.rate if spec.rate > 0 else 0.0
    client = AsyncClient(spec.addresses, timeout=spec.timeout_s, retries=spec.retries,
                         refresh_interval=2.0, suspect_seconds=1.0, rng=rng)
    seq = 0
    try:
        while time.monotonic() < end and budget[0] > 0 and not _stopped(spec):
            budget[0] -= 1
            seq += 1
            started = time.monotonic()
            op = await _one(spec, client, rng, cid, seq, rec)
            if op["status"] == "ok" and op["kind"] != "read" and rng.random() < spec.ryw_chance:
                await _read_back(spec, client, op, rec)
            delay = pause * (0.5 + rng.random()) - (time.monotonic() - started)
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        await client.close()


def _stopped(spec: WorkloadSpec) -> bool:
    return spec.stop is not None and spec.stop.is_set()


async def _one(spec: WorkloadSpec, client: AsyncClient, rng: random.Random, cid: int,
               seq: int, rec: Recorder) -> dict:
    r = rng.random()
    unique, blind, _ = spec.mix
    value = f"c{cid}.{seq}"
    if r < unique:
        return await _put(spec, client, rec, cid, seq, "unique", f"u/{cid}/{seq}", value)
    if r < unique + blind:
        key = f"b/{rng.randrange(spec.shared_keys)}"
        return await _put(spec, client, rec, cid, seq, "blind", key, value)
    return await _rmw(spec, client, rec, cid, seq, f"r/{rng.randrange(spec.shared_keys)}", value)


async def _put(spec: WorkloadSpec, client: AsyncClient, rec: Recorder, cid: int, seq: int,
               kind: str, key: str, value: str, ctx: bytes | None = None,
               seen: list[str] | None = None) -> dict:
    op = {"cid": cid, "seq": seq, "kind": kind, "key": key, "value": value,
          "seen": seen or [], "ctx_in": ctx.hex() if ctx else None, "ctx_out": None,
          "status": "", "t0": rec.now(), "t1": 0.0}
    try:
        out = await client.put(key, value, context=ctx, w=spec.write_level)
        op["ctx_out"], op["status"] = out.hex(), "ok"
    except RingkvError as exc:
        op["status"] = type(exc).__name__
    except (OSError, asyncio.TimeoutError) as exc:
        op["status"] = type(exc).__name__
    op["t1"] = rec.now()
    rec.ops.append(op)
    return op


async def _rmw(spec: WorkloadSpec, client: AsyncClient, rec: Recorder, cid: int, seq: int,
               key: str, token: str) -> dict:
    t0 = rec.now()
    try:
        values, ctx = await client.get(key, r=spec.read_level)
    except (RingkvError, OSError, asyncio.TimeoutError) as exc:
        op = {"cid": cid, "seq": seq, "kind": "read", "key": key, "value": None, "seen": [],
              "ctx_in": None, "ctx_out": None, "status": type(exc).__name__, "t0": t0,
              "t1": rec.now()}
        rec.ops.append(op)
        return op
    seen = sorted(v.decode() for v in values)
    ids = sorted({s.split("<", 1)[0] for s in seen})
    value = token + "<" + ",".join(ids)
    return await _put(spec, client, rec, cid, seq, "rmw", key, value, ctx or None, seen)


async def _read_back(spec: WorkloadSpec, client: AsyncClient, write: dict, rec: Recorder) -> None:
    """Read the key just written; record whether the read's context covers the write."""
    op = {"cid": write["cid"], "seq": write["seq"], "kind": "ryw", "key": write["key"],
          "value": write["value"], "seen": [], "ctx_in": None, "ctx_out": None,
          "status": "", "t0": rec.now(), "t1": 0.0}
    try:
        values, ctx = await client.get(write["key"], r=spec.read_level)
        seen = [v.decode() for v in values]
        covered = versions.vv_descends(versions.decode_context(ctx),
                                       versions.decode_context(bytes.fromhex(write["ctx_out"])))
        op["seen"] = seen
        op["status"] = "saw" if covered or write["value"] in seen else "missed"
    except (RingkvError, OSError, asyncio.TimeoutError) as exc:
        op["status"] = type(exc).__name__
    op["t1"] = rec.now()
    rec.ops.append(op)


__all__ = ["WorkloadSpec", "run"]
