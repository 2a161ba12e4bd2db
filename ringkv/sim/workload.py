"""The simulated workload: the chaos workload's ops, run by clients on the sim network.

Same ops and the same history records as :mod:`ringkv.chaos.workload` (so the chaos
checker judges both): ``unique`` blind puts to keys no other op touches, ``blind`` puts to
shared keys, ``rmw`` read-modify-writes on shared keys, and ``ryw`` read-backs after an
acknowledged write. Each client is a task outside every node (its link to a node has
delay but no loss or partition), sends each op to a seeded random node, and waits at most
``timeout`` virtual seconds; a write that fails or times out is of unknown outcome.
Every outcome is also fed to the trace digest.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from dataclasses import dataclass
from typing import Any

from ringkv import versions
from ringkv.errors import RingkvError
from ringkv.sim.network import SimNetwork, SimRpcClient
from ringkv.sim.trace import Trace


@dataclass
class WorkloadSpec:
    clients: int = 4
    rate: float = 40.0  # ops per virtual second over all clients (Poisson arrivals)
    shared_keys: int = 8
    mix: tuple[float, float, float] = (0.35, 0.25, 0.40)  # unique, blind, rmw
    write_level: str = "QUORUM"
    read_level: str = "QUORUM"
    ryw_chance: float = 0.3
    timeout: float = 3.0  # client-side, virtual seconds


class Workload:
    def __init__(self, net: SimNetwork, addresses: list[tuple[str, int]], spec: WorkloadSpec,
                 rng: random.Random, trace: Trace) -> None:
        self.net, self.addresses, self.spec, self.trace = net, addresses, spec, trace
        self.rng = rng
        self.history: list[dict] = []
        self.end = 0.0

    def start(self, duration: float) -> list[asyncio.Task]:
        """Start every client; they stop starting ops ``duration`` seconds from now."""
        loop = self.net.loop
        self.end = loop.time() + duration
        ctx = contextvars.Context()  # clients belong to no node
        return [loop.create_task(self._client(cid, random.Random(self.rng.getrandbits(64))),
                                 context=ctx) for cid in range(self.spec.clients)]

    async def _client(self, cid: int, rng: random.Random) -> None:
        loop, spec = self.net.loop, self.spec
        client = SimRpcClient(self.net, f"client{cid}")
        per_client = spec.rate / spec.clients
        seq = 0
        while True:
            await asyncio.sleep(rng.expovariate(per_client))
            if loop.time() >= self.end:
                return
            seq += 1
            op = await self._one(client, rng, cid, seq)
            if op["kind"] != "read" and op["status"] == "ok" and rng.random() < spec.ryw_chance:
                await self._read_back(client, rng, op)

    async def _one(self, client: SimRpcClient, rng: random.Random, cid: int, seq: int) -> dict:
        r = rng.random()
        unique, blind, _ = self.spec.mix
        value = f"c{cid}.{seq}"
        if r < unique:
            return await self._put(client, rng, cid, seq, "unique", f"u/{cid}/{seq}", value)
        if r < unique + blind:
            key = f"b/{rng.randrange(self.spec.shared_keys)}"
            return await self._put(client, rng, cid, seq, "blind", key, value)
        return await self._rmw(client, rng, cid, seq, f"r/{rng.randrange(self.spec.shared_keys)}",
                               value)

    async def call(self, client: SimRpcClient, rng: random.Random, method: str, body: dict) -> Any:
        host, port = self.addresses[rng.randrange(len(self.addresses))]
        return await client.call(host, port, method, body, self.spec.timeout)

    async def _put(self, client: SimRpcClient, rng: random.Random, cid: int, seq: int, kind: str,
                   key: str, value: str, ctx: bytes | None = None,
                   seen: list[str] | None = None) -> dict:
        loop = self.net.loop
        op = {"cid": cid, "seq": seq, "kind": kind, "key": key, "value": value,
              "seen": seen or [], "ctx_in": ctx.hex() if ctx else None, "ctx_out": None,
              "status": "", "t0": loop.time(), "t1": 0.0}
        body = {"key": key.encode(), "value": value.encode(), "context": ctx,
                "w": self.spec.write_level}
        try:
            out = await self.call(client, rng, "put", body)
            op["ctx_out"], op["status"] = out["context"].hex(), "ok"
        except RingkvError as exc:
            op["status"] = type(exc).__name__
        return self._record(op)

    async def _rmw(self, client: SimRpcClient, rng: random.Random, cid: int, seq: int, key: str,
                   token: str) -> dict:
        loop = self.net.loop
        t0 = loop.time()
        try:
            reply = await self.call(client, rng, "get", {"key": key.encode(), "r": self.spec.read_level})
        except RingkvError as exc:
            return self._record({"cid": cid, "seq": seq, "kind": "read", "key": key, "value": None,
                                 "seen": [], "ctx_in": None, "ctx_out": None,
                                 "status": type(exc).__name__, "t0": t0, "t1": 0.0})
        seen = sorted(v.decode() for v in reply["values"])
        ids = sorted({s.split("<", 1)[0] for s in seen})
        value = token + "<" + ",".join(ids)
        return await self._put(client, rng, cid, seq, "rmw", key, value, reply["context"] or None, seen)

    async def _read_back(self, client: SimRpcClient, rng: random.Random, write: dict) -> None:
        op = {"cid": write["cid"], "seq": write["seq"], "kind": "ryw", "key": write["key"],
              "value": write["value"], "seen": [], "ctx_in": None, "ctx_out": None,
              "status": "", "t0": self.net.loop.time(), "t1": 0.0}
        try:
            reply = await self.call(client, rng, "get", {"key": write["key"].encode(),
                                                         "r": self.spec.read_level})
            seen = [v.decode() for v in reply["values"]]
            covered = versions.vv_descends(versions.decode_context(reply["context"]),
                                           versions.decode_context(bytes.fromhex(write["ctx_out"])))
            op["seen"] = seen
            op["status"] = "saw" if covered or write["value"] in seen else "missed"
        except RingkvError as exc:
            op["status"] = type(exc).__name__
        self._record(op)

    def _record(self, op: dict) -> dict:
        op["t1"] = self.net.loop.time()
        self.history.append(op)
        self.trace.event(op["t1"], "op", op["cid"], op["seq"], op["kind"], op["key"], op["value"],
                         op["status"], op["ctx_out"])
        return op


__all__ = ["Workload", "WorkloadSpec"]
