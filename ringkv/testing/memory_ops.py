"""An in-memory stand-in for a node's key-value operations, with siblings and contexts.

:class:`MemoryOps` implements the ops protocol that front ends (the RESP server, the
benchmark) call on a node -- ``kv_get``, ``kv_put``, ``kv_delete`` -- over a dict, with the
same causal rules as the real store: each write becomes a sibling with a fresh dot; a
write (or delete) removes exactly the siblings its context covers; a write whose context
is ``None`` supersedes everything held (the node's rule for context-free writes), while
a stale context (say the empty one a get of a missing key returns) adds a sibling. Contexts are opaque
bytes (``b"ctx:" + comma separated dots``). TTLs expire against an injected clock.

It is a test double for the *node*, used to test the things that sit in front of it.
``fail_with`` makes the next calls raise a given error; ``delay`` makes each call
yield to the loop that many seconds first (to exercise concurrency and ordering).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import Callable

from ringkv.errors import InvalidRequest, RingkvError

_LEVELS = {"ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_ONE", "LOCAL_QUORUM", "EACH_QUORUM"}


class MemoryOps:
    """Dict-backed ``kv_get``/``kv_put``/``kv_delete`` with sibling semantics."""

    def __init__(self, clock: Callable[[], float] | None = None, delay: float = 0.0) -> None:
        import time

        self._clock = clock or time.monotonic
        self._data: dict[bytes, list[tuple[int, bytes, float | None]]] = {}
        self._dots = itertools.count(1)
        self.delay = delay
        self.fail_with: RingkvError | None = None
        self.calls: deque[tuple[str, bytes, str | None]] = deque(maxlen=1000)  # the latest calls

    async def kv_get(self, key: bytes, level: str | None) -> tuple[list[bytes], bytes]:
        await self._enter("get", key, level)
        live = self._live(key)
        return [v for _, v, _ in live], _context(live)

    async def kv_put(self, key: bytes, value: bytes, context: bytes | None, level: str | None,
                     ttl: float | None) -> bytes:
        await self._enter("put", key, level)
        covered = self._covered(key, context)
        expires = None if ttl is None else self._clock() + ttl
        live = [s for s in self._live(key) if s[0] not in covered]
        live.append((next(self._dots), value, expires))
        self._data[key] = live
        return _context(live)

    async def kv_delete(self, key: bytes, context: bytes | None, level: str | None) -> None:
        await self._enter("delete", key, level)
        covered = self._covered(key, context)
        live = [s for s in self._live(key) if s[0] not in covered]
        if live:
            self._data[key] = live
        else:
            self._data.pop(key, None)

    def siblings(self, key: bytes) -> list[bytes]:
        """The live values of ``key`` (test inspection, no call recorded)."""
        return [v for _, v, _ in self._live(key)]

    def _covered(self, key: bytes, context: bytes | None) -> set[int]:
        if context is None:
            return {dot for dot, _, _ in self._live(key)}
        return _covered(context)

    def _live(self, key: bytes) -> list[tuple[int, bytes, float | None]]:
        now = self._clock()
        return [s for s in self._data.get(key, ()) if s[2] is None or s[2] > now]

    async def _enter(self, op: str, key: bytes, level: str | None) -> None:
        self.calls.append((op, key, level))
        if self.delay:
            await asyncio.sleep(self.delay)
        if level is not None and level.upper() not in _LEVELS and not level.isdigit():
            raise InvalidRequest(f"unknown consistency level {level!r}")
        if self.fail_with is not None:
            raise self.fail_with


def _context(live: list[tuple[int, bytes, float | None]]) -> bytes:
    return b"ctx:" + b",".join(b"%d" % dot for dot, _, _ in live)


def _covered(context: bytes | None) -> set[int]:
    if not context:
        return set()
    if not context.startswith(b"ctx:"):
        raise InvalidRequest("malformed context")
    body = context[4:]
    try:
        return {int(x) for x in body.split(b",")} if body else set()
    except ValueError:
        raise InvalidRequest("malformed context") from None


__all__ = ["MemoryOps"]
