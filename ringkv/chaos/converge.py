"""After healing: wait for membership, repair, replica convergence and the final read.

Async helpers run from the client namespace (see :func:`ringkv.chaos.netns.run_in_netns`):

- :func:`wait_members`: every node's ``ring`` reply lists the expected nodes up;
- :func:`read_all`: read each key at ALL (retrying a few times): the checker's final
  state. A read at ALL contacts every replica and writes the join back to stale ones,
  so a first pass also *is* a read-repair pass;
- :func:`divergent_keys`: keys whose replicas hold different version sets
  (``replica_get`` on each replica of each key);
- :func:`divergent_ranges`: token ranges whose replicas report different Merkle roots
  (``merkle_root`` RPC, ``{start, end}``); ``None`` when the nodes do not serve it yet;
- :func:`wait_converged`: poll both until nothing differs or the bound passes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ringkv.chaos.checker import Final
from ringkv.client import AsyncClient
from ringkv.errors import InvalidRequest, RingkvError
from ringkv.net.transport import RpcClient
from ringkv.ring import NodeInfo, Ring, storage_key, token_for

UP = ("normal", "joining", "leaving")


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


async def call(rpc: RpcClient, address: str, method: str, body: dict, timeout: float = 5.0) -> dict:
    host, port = split(address)
    return await rpc.call(host, port, method, body, timeout)


async def ring_of(rpc: RpcClient, address: str) -> tuple[Ring, dict[str, str], dict[str, str]]:
    """The ring as ``address`` sees it, node id -> address, node id -> state."""
    reply = await call(rpc, address, "ring", {})
    infos = [NodeInfo(n["node_id"], tuple(n["tokens"]), n["dc"], n["rack"], n["host"], n["port"],
                      n["http_port"]) for n in reply["nodes"]]
    addrs = {n["node_id"]: f"{n['host']}:{n['port']}" for n in reply["nodes"]}
    states = {n["node_id"]: n["state"] for n in reply["nodes"]}
    return Ring(infos, reply["replication"]), addrs, states


async def views(rpc: RpcClient, addresses: list[str]) -> dict[str, dict[str, str]]:
    """Each answering node's view: node id -> state."""
    out: dict[str, dict[str, str]] = {}
    for address in addresses:
        try:
            _ring, _addrs, states = await ring_of(rpc, address)
            out[address] = states
        except (RingkvError, OSError):
            pass
    return out


async def wait_members(rpc: RpcClient, addresses: list[str], expected: set[str],
                       timeout: float, states: tuple[str, ...] = UP) -> float:
    """Wait until every address answers and lists exactly ``expected`` in ``states``;
    seconds waited. TimeoutError naming the views if not within ``timeout``."""
    start = time.monotonic()
    while True:
        seen = await views(rpc, addresses)
        good = len(seen) == len(addresses) and all(
            {n for n, s in v.items() if s in states} == expected for v in seen.values())
        if good:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"membership not settled in {timeout}s: {seen}")
        await asyncio.sleep(0.2)


async def read_all(client: AsyncClient, keys: list[str], level: str = "ALL",
                   attempts: int = 5, concurrency: int = 32) -> dict[str, Final]:
    """Read every key at ``level``; a key whose reads all fail gets ``Final(None)``."""
    sem = asyncio.Semaphore(concurrency)
    out: dict[str, Final] = {}

    async def one(key: str) -> None:
        async with sem:
            for attempt in range(attempts):
                try:
                    values, ctx = await client.get(key, r=level)
                    out[key] = Final([v.decode() for v in values], ctx.hex())
                    return
                except (RingkvError, OSError):
                    await asyncio.sleep(0.2 * (attempt + 1))
            out[key] = Final(None)

    await asyncio.gather(*(one(k) for k in keys))
    return out


async def divergent_keys(rpc: RpcClient, ring: Ring, addrs: dict[str, str], keys: list[str],
                         concurrency: int = 64) -> list[str]:
    """Keys whose replicas do not all hold the same version set bytes."""
    sem = asyncio.Semaphore(concurrency)

    async def differs(key: str) -> bool:
        kb = key.encode()
        async with sem:
            got = []
            for node in ring.replicas(token_for(kb)):
                try:
                    reply = await call(rpc, addrs[node], "replica_get", {"skey": storage_key(kb)})
                except (RingkvError, OSError):
                    return True
                got.append(reply.get("vs"))
            return len(set(got)) > 1

    flags = await asyncio.gather(*(differs(k) for k in keys))
    return [k for k, bad in zip(keys, flags) if bad]


async def divergent_ranges(rpc: RpcClient, ring: Ring,
                           addrs: dict[str, str]) -> list[tuple[int, int]] | None:
    """Ranges whose replicas disagree on the Merkle root; None if ``merkle_root`` is unknown."""
    bad: list[tuple[int, int]] = []
    for start, end in ring.ranges():
        roots = set()
        for node in ring.replicas(end):
            try:
                reply = await call(rpc, addrs[node], "merkle_root", {"start": start, "end": end})
            except InvalidRequest as exc:
                if "unknown method" in str(exc):
                    return None
                raise
            except (RingkvError, OSError):
                roots.add(("unreachable", node))
                continue
            roots.add(_root_of(reply))
        if len(roots) > 1:
            bad.append((start, end))
    return bad


def _root_of(reply: dict) -> Any:
    for name in ("root", "hash", "digest"):
        if name in reply:
            return reply[name]
    return tuple(sorted((k, repr(v)) for k, v in reply.items()))


async def wait_converged(rpc: RpcClient, address: str, keys: list[str], timeout: float,
                         log=print) -> dict[str, Any]:
    """Poll until no key (and, if served, no Merkle range) differs across replicas.

    Returns ``{converged, seconds, divergent_keys, divergent_ranges, merkle}``."""
    start = time.monotonic()
    merkle_seen = None
    while True:
        ring, addrs, _states = await ring_of(rpc, address)
        keys_bad = await divergent_keys(rpc, ring, addrs, keys)
        ranges_bad = await divergent_ranges(rpc, ring, addrs) if merkle_seen is not False else None
        merkle_seen = ranges_bad is not None
        done = not keys_bad and not ranges_bad
        waited = time.monotonic() - start
        if done or waited > timeout:
            return {"converged": done, "seconds": round(waited, 2),
                    "divergent_keys": len(keys_bad), "divergent_ranges": len(ranges_bad or []),
                    "merkle": merkle_seen, "sample": keys_bad[:5]}
        log(f"[converge {waited:6.1f}s] {len(keys_bad)} keys, "
            f"{len(ranges_bad or [])} merkle ranges still differ")
        await asyncio.sleep(1.0)


__all__ = ["wait_members", "read_all", "divergent_keys", "divergent_ranges",
           "wait_converged", "ring_of", "views"]
