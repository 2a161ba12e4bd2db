"""The ringkv Python client: one asyncio client, and a sync wrapper that runs it.

:class:`AsyncClient` learns the ring from any node (``ring`` RPC), sends each request
straight to a replica of its key (token-aware: ``ring.token_for`` + ``Ring.replicas``),
fails over to the other replicas and then to the rest of the ring when a node cannot be
reached, and retries retriable errors (``RingkvError.retriable``) a bounded number of
times with exponential backoff and jitter. :class:`Client` has the same methods, blocking;
it owns a private event loop in a daemon thread and forwards every call to an AsyncClient
on it, so the logic exists once.

Contracts:
- Keys and values are ``bytes`` (``str`` is encoded as UTF-8). Keys and values over the
  configured limits raise ``TooLarge`` before anything is sent.
- ``get`` returns ``(values, context)``: every live sibling, and an opaque causal context
  to hand to the next ``put``/``delete`` of that key. ``values == []`` means not found.
- With a ``resolver``, ``get`` collapses siblings to one value, writes that value back
  with the context (so the siblings are resolved on the cluster), and returns
  ``([value], new_context)``.
- A retried ``put`` whose first attempt timed out may have been applied; with the same
  context the retry cannot lose data, at worst it leaves an equal sibling.
- With ``secret`` (the cluster secret, bytes), every connection proves it to the node and
  checks the node's proof (D32); a wrong or missing secret raises ``AuthenticationFailed``.
- With ``ssl`` (an ``ssl.SSLContext``, e.g. ``ringkv.net.tls.client_context(ca_file)``),
  connections are TLS (D33); a node whose certificate the context does not trust raises
  ``AuthenticationFailed``.
Docs: docs/client.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
from bisect import bisect_left
import threading
from typing import Any, Callable, Coroutine, Sequence, TypeVar, Union

from ringkv.config import LimitsConfig
from ringkv.errors import (AuthenticationFailed, InvalidRequest, RingkvError, Timeout, TooLarge,
                           Unavailable)
from ringkv.net.transport import RpcClient, is_no_reply, is_outcome_unknown, is_peer_unreachable
from ringkv.ring import NodeInfo, Ring, token_for

log = logging.getLogger(__name__)

Resolver = Callable[[list[bytes]], Union[bytes, str]]
Level = Union[str, int, None]  # a level name ("QUORUM", "ONE", ...) or a replica count
T = TypeVar("T")
_DOWN_STATES = frozenset({"down", "dn", "dead", "left", "removed", "decommissioned"})


class AsyncClient:
    """Token-aware asyncio client for a ringkv cluster. Use ``async with`` or call ``close``."""

    def __init__(self, seeds: Sequence[str], *, timeout: float = 2.0, retries: int = 3,
                 backoff: float = 0.02, max_backoff: float = 1.0,
                 resolver: Resolver | None = None, refresh_interval: float = 30.0,
                 suspect_seconds: float = 2.0, limits: LimitsConfig | None = None,
                 connections_per_peer: int = 1, rng: random.Random | None = None,
                 secret: bytes | None = None, ssl: Any = None) -> None:
        if not seeds:
            raise InvalidRequest("AsyncClient needs at least one seed 'host:port'")
        self.seeds = [_split(s) for s in seeds]
        self.timeout, self.retries = timeout, retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.resolver = resolver
        self.refresh_interval, self.suspect_seconds = refresh_interval, suspect_seconds
        self.limits = limits or LimitsConfig()
        self._rpc = RpcClient(self.limits.max_frame_bytes, connect_timeout=timeout,
                              connections_per_peer=connections_per_peer, secret=secret, ssl=ssl)
        self._rng = rng or random.Random()
        self._ring: Ring | None = None
        self._tokens: list[int] = []  # the ring's tokens, sorted
        self._plans: list[list[NodeInfo] | None] = []  # per token index: its replicas, cached
        self._down_states: set[str] = set()  # node ids the cluster reports down
        self._suspect: dict[str, float] = {}  # node id -> loop time until which we avoid it
        self._next_refresh = 0.0
        self._refreshing: asyncio.Task | None = None
        self._rr = 0

    # ------------------------------------------------------------ public API

    async def get(self, key: bytes | str, r: Level = None) -> tuple[list[bytes], bytes]:
        """All live sibling values of ``key`` and the causal context (``[]`` if not found)."""
        k = self._key(key)
        reply = await self._call_key(k, "get", {"key": k, "r": r})
        values, ctx = list(reply.get("values") or []), reply.get("context") or b""
        if self.resolver is not None and len(values) > 1:
            return await self._resolve(k, values, ctx)
        return values, ctx

    async def put(self, key: bytes | str, value: bytes | str, context: bytes | None = None,
                  w: Level = None, ttl: float | None = None) -> bytes:
        """Write ``value``; ``context`` (from ``get``) says which versions it supersedes.
        Returns the new context."""
        k, v = self._key(key), self._value(value)
        body = {"key": k, "value": v, "context": _context(context), "w": w, "ttl": ttl}
        reply = await self._call_key(k, "put", body)
        return reply.get("context") or b""

    async def delete(self, key: bytes | str, context: bytes | None = None,
                     w: Level = None) -> None:
        """Delete ``key`` (a tombstone version superseding what ``context`` covers)."""
        k = self._key(key)
        await self._call_key(k, "delete", {"key": k, "context": _context(context), "w": w})

    async def connect(self) -> "AsyncClient":
        """Fetch the ring now (otherwise the first request does)."""
        await self.refresh_ring()
        return self

    async def ring(self) -> Ring:
        """The ring as last learned (fetched first if unknown)."""
        if self._ring is None:
            await self._first_ring()
        assert self._ring is not None
        return self._ring

    async def refresh_ring(self) -> None:
        """Ask the known nodes, then the seeds, for the ring; Unavailable if none answers."""
        last: RingkvError | None = None
        for host, port in self._ring_sources():
            try:
                reply = await self._rpc.call(host, port, "ring", {}, self.timeout)
                self._install_ring(reply)
                return
            except RingkvError as exc:
                last = exc
        if isinstance(last, AuthenticationFailed):  # not unavailable: refused (wrong secret)
            raise last
        raise Unavailable(1, 0, f"no node answered the ring request: {last}")

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        await self._rpc.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ routing and retries

    async def _call_key(self, key: bytes, method: str, body: dict) -> dict:
        if self._ring is None:
            await self._first_ring()
        else:
            self._maybe_refresh()
        # The first try goes to one replica (rotated to spread load); the list of every
        # target in failover order is built only if that try fails.
        targets: list[NodeInfo] | None = None
        tokens = self._tokens
        i = bisect_left(tokens, token_for(key))
        if i == len(tokens):
            i = 0
        plan = self._plans[i]
        if plan is None:
            plan = self._plans[i] = self._plan(tokens[i])
        self._rr += 1
        j = self._rr % len(plan)
        if self._suspect or self._down_states:
            targets = self._targets_avoiding(tokens[i], plan)
            node = targets[0]
        else:
            node = plan[j]
        retries_left, unreachable, delay, n = self.retries, 0, self.backoff, 1
        uncertain: RingkvError | None = None  # a write's earlier try whose outcome is unknown
        while True:
            try:
                return await self._rpc.call(node.host, node.port, method, body, self.timeout)
            except RingkvError as exc:
                if method != "get" and (isinstance(exc, Timeout) or is_outcome_unknown(exc)):
                    uncertain = exc
                elif uncertain is not None and (not exc.retriable or retries_left <= 0):
                    raise _unknown_outcome(uncertain, exc) from exc
                if not exc.retriable:
                    raise
                if targets is None:
                    targets = plan[j:] + plan[:j]
                if is_peer_unreachable(exc):
                    self._mark_suspect(node.node_id)
                    unreachable += 1
                    if unreachable < len(targets):
                        node = targets[n % len(targets)]
                        n += 1
                        continue  # fail over to the next node at once
                elif is_no_reply(exc):
                    self._mark_suspect(node.node_id)  # silent: avoid it for a while
                if retries_left <= 0:
                    raise
                retries_left -= 1
                await asyncio.sleep(delay * (0.5 + self._rng.random()))
                delay = min(delay * 2, self.max_backoff)
                node = targets[n % len(targets)]
                n += 1

    def _plan(self, token: int) -> list[NodeInfo]:
        assert self._ring is not None
        plan = [self._ring.node(n) for n in self._ring.replicas(token)]
        if not plan:
            raise Unavailable(1, 0, "the ring has no nodes")
        return plan

    def _targets_avoiding(self, token: int, plan: list[NodeInfo]) -> list[NodeInfo]:
        assert self._ring is not None
        now = asyncio.get_running_loop().time()
        for node_id in [n for n, until in self._suspect.items() if until <= now]:
            del self._suspect[node_id]
        bad = self._suspect.keys() | self._down_states
        healthy = [n for n in plan if n.node_id not in bad]
        if healthy:
            j = self._rr % len(healthy)
            healthy = healthy[j:] + healthy[:j]
        ids = {n.node_id for n in plan}
        rest = [self._ring.node(n) for n in self._ring.walk(token) if n not in ids]
        return (healthy + [n for n in plan if n.node_id in bad]
                + [n for n in rest if n.node_id not in bad] + [n for n in rest if n.node_id in bad])

    def _mark_suspect(self, node_id: str) -> None:
        self._suspect[node_id] = asyncio.get_running_loop().time() + self.suspect_seconds
        self._next_refresh = 0.0
        self._maybe_refresh()

    async def _resolve(self, key: bytes, values: list[bytes], ctx: bytes) -> tuple[list[bytes], bytes]:
        assert self.resolver is not None
        value = self._value(self.resolver(values))
        try:
            ctx = await self.put(key, value, context=ctx)
        except RingkvError as exc:  # the read succeeded; the next put with ctx resolves anyway
            log.warning("writing back the resolved value of %r failed: %s", key, exc)
        return [value], ctx

    # ------------------------------------------------------------ ring upkeep

    async def _first_ring(self) -> None:
        """Fetch the ring once for all the requests waiting for it."""
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._background_refresh(raise_errors=True))
            self._refreshing.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(self._refreshing)

    def _maybe_refresh(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_refresh or self._refreshing is not None:
            return
        self._next_refresh = loop.time() + self.refresh_interval
        self._refreshing = loop.create_task(self._background_refresh())

    async def _background_refresh(self, raise_errors: bool = False) -> None:
        try:
            await self.refresh_ring()
        except RingkvError as exc:
            if raise_errors:
                raise
            log.info("ring refresh failed: %s", exc)
        finally:
            self._refreshing = None

    def _ring_sources(self) -> list[tuple[str, int]]:
        known: list[tuple[str, int]] = []
        if self._ring is not None:
            now = asyncio.get_running_loop().time()
            nodes = sorted(self._ring.nodes, key=lambda n: self._suspect.get(n.node_id, 0) > now)
            known = [(n.host, n.port) for n in nodes]
        return known + [s for s in self.seeds if s not in known]

    def _install_ring(self, reply: dict) -> None:
        try:
            nodes = [NodeInfo(node_id=str(n["node_id"]), tokens=tuple(int(t) for t in n["tokens"]),
                              dc=str(n.get("dc", "dc1")), rack=str(n.get("rack", "rack1")),
                              host=str(n.get("host", "127.0.0.1")), port=int(n["port"]),
                              http_port=int(n.get("http_port", 0)))
                     for n in reply["nodes"]]
            replication = {str(dc): int(rf) for dc, rf in dict(reply["replication"]).items()}
            ring = Ring(nodes, replication)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest(f"malformed ring reply: {exc!r}") from None
        if not ring.tokens:
            raise Unavailable(1, 0, "the ring reply lists no nodes with tokens")
        self._down_states = {str(n["node_id"]) for n in reply["nodes"]
                             if str(n.get("state", "up")).lower() in _DOWN_STATES}
        self._ring = ring
        self._tokens = list(ring.tokens)
        self._plans = [None] * len(self._tokens)
        self._next_refresh = asyncio.get_running_loop().time() + self.refresh_interval

    # ------------------------------------------------------------ argument checks

    def _key(self, key: bytes | str) -> bytes:
        k = _as_bytes(key, "key")
        if not k:
            raise InvalidRequest("key must not be empty")
        if len(k) > self.limits.max_key_bytes:
            raise TooLarge("key", len(k), self.limits.max_key_bytes)
        return k

    def _value(self, value: bytes | str) -> bytes:
        v = _as_bytes(value, "value")
        if len(v) > self.limits.max_value_bytes:
            raise TooLarge("value", len(v), self.limits.max_value_bytes)
        return v


class Client:
    """Blocking client: the AsyncClient run on a private event loop in a daemon thread.

    Same constructor arguments and methods as :class:`AsyncClient`; safe to share
    between threads. Use ``with Client([...]) as db:`` or call ``close()``."""

    def __init__(self, seeds: Sequence[str], **options: Any) -> None:
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ringkv-client",
                                        daemon=True)
        self._thread.start()
        self.aio = AsyncClient(seeds, **options)

    def get(self, key: bytes | str, r: Level = None) -> tuple[list[bytes], bytes]:
        return self._run(self.aio.get(key, r))

    def put(self, key: bytes | str, value: bytes | str, context: bytes | None = None,
            w: Level = None, ttl: float | None = None) -> bytes:
        return self._run(self.aio.put(key, value, context, w, ttl))

    def delete(self, key: bytes | str, context: bytes | None = None, w: Level = None) -> None:
        return self._run(self.aio.delete(key, context, w))

    def connect(self) -> "Client":
        self._run(self.aio.connect())
        return self

    def ring(self) -> Ring:
        return self._run(self.aio.ring())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self.aio.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync Client cannot be used from its own loop (resolver?)")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()


def _as_bytes(data: Any, what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise InvalidRequest(f"{what} must be bytes or str, not {type(data).__name__}")


def _context(context: Any) -> bytes | None:
    if context is None or isinstance(context, bytes):
        return context or None
    if isinstance(context, (bytearray, memoryview)):
        return bytes(context)
    raise InvalidRequest(f"context must be the bytes returned by get/put, not {type(context).__name__}")


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidRequest(f"bad address {address!r}: expected 'host:port'")
    return host.strip("[]") or "127.0.0.1", int(port)


def _unknown_outcome(uncertain: RingkvError, last: RingkvError) -> Timeout:
    """The error for a write whose retry failed with ``last`` (say StorageFull or
    Unavailable: "nothing was written") after an earlier try timed out or lost its
    connection in flight: that try may have been applied, so the caller gets a Timeout
    (outcome unknown) naming both, never the "nothing written" of the last try alone."""
    if isinstance(uncertain, Timeout):
        return Timeout(uncertain.required, uncertain.received,
                       f"an earlier try timed out and may have been applied; the last try: {last}")
    return Timeout(1, 0, f"an earlier try lost its connection in flight and may have been "
                         f"applied ({uncertain}); the last try: {last}")


__all__ = ["AsyncClient", "Client", "Resolver"]

