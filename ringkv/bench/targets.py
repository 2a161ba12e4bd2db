"""What a benchmark talks to: a ringkv cluster (AsyncClient), a RESP server, or memory.

Every target offers the same three coroutines, shaped like ringkv's client::

    await target.get(key) -> (values: list[bytes], context: bytes | None)
    await target.put(key, value, context: bytes | None) -> None
    await target.close()

Errors a target raises are counted per type by the runner and never stop it.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence


class Target(Protocol):
    async def get(self, key: bytes) -> tuple[list[bytes], bytes | None]: ...

    async def put(self, key: bytes, value: bytes, context: bytes | None) -> None: ...

    async def close(self) -> None: ...


class ClientTarget:
    """A ringkv cluster through the token-aware AsyncClient."""

    def __init__(self, seeds: Sequence[str], read_level: Any = None, write_level: Any = None,
                 timeout: float = 5.0) -> None:
        from ringkv.client import AsyncClient

        self.client = AsyncClient(list(seeds), timeout=timeout)
        self.r, self.w = read_level, write_level

    async def connect(self) -> "ClientTarget":
        await self.client.connect()
        return self

    async def get(self, key: bytes) -> tuple[list[bytes], bytes | None]:
        return await self.client.get(key, r=self.r)

    async def put(self, key: bytes, value: bytes, context: bytes | None) -> None:
        await self.client.put(key, value, context=context, w=self.w)

    async def close(self) -> None:
        await self.client.close()


class RespTarget:
    """Any RESP server (ringkv's RESP port, Redis) through redis-py; contexts are not used."""

    def __init__(self, address: str, connections: int = 50) -> None:
        import redis.asyncio as aredis

        host, port = address.rsplit(":", 1)
        self.redis = aredis.Redis(host=host, port=int(port), protocol=2,
                                  max_connections=connections, socket_timeout=10)

    async def connect(self) -> "RespTarget":
        await self.redis.ping()
        return self

    async def get(self, key: bytes) -> tuple[list[bytes], bytes | None]:
        value = await self.redis.get(key)
        return ([value] if value is not None else []), None

    async def put(self, key: bytes, value: bytes, context: bytes | None) -> None:
        await self.redis.set(key, value)

    async def close(self) -> None:
        await self.redis.aclose()


class MemoryTarget:
    """An in-process MemoryOps (tests, and measuring the generator's own cost)."""

    def __init__(self) -> None:
        from ringkv.testing.memory_ops import MemoryOps

        self.ops = MemoryOps()

    async def connect(self) -> "MemoryTarget":
        return self

    async def get(self, key: bytes) -> tuple[list[bytes], bytes | None]:
        return await self.ops.kv_get(key, None)

    async def put(self, key: bytes, value: bytes, context: bytes | None) -> None:
        await self.ops.kv_put(key, value, context, None, None)

    async def close(self) -> None:
        return None


async def open_target(kind: str, seeds: Sequence[str], read_level: Any = None,
                      write_level: Any = None, concurrency: int = 50) -> Target:
    """``kind``: "client" (ringkv cluster at ``seeds``), "resp" (``seeds[0]``) or "memory"."""
    if kind == "client":
        return await ClientTarget(seeds, read_level, write_level).connect()
    if kind == "resp":
        return await RespTarget(seeds[0], concurrency).connect()
    if kind == "memory":
        return await MemoryTarget().connect()
    raise ValueError(f"unknown target {kind!r} (client, resp, memory)")


__all__ = ["Target", "ClientTarget", "RespTarget", "MemoryTarget", "open_target"]
