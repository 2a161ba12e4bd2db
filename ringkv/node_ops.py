"""The asyncio side of one coordinated read or write: the shell around a quorum.

:class:`ReadOp` and :class:`WriteOp` feed the pure state machines of
:mod:`ringkv.coordinator` with replies, failures and one timer, and carry out what they
decide (answer, contact a spare replica, read repair). They hold no policy of their own.
The node they serve provides: ``node_id``, ``timeout``, ``engine``, ``alive(node_id)``,
``_request(node_id, method, body) -> Future``, ``_repair(node_id, skey, merged)``,
``config.cluster.read_repair`` and ``handoff`` (:mod:`ringkv.handoff`: writes to a down
replica go to its stand-in as ``hint_put``; a replica that fails a write gets a hint).

Version sets travel and are joined as encoded bytes (:func:`join_bytes`): the encoding is
canonical, so equal sets are equal bytes and the common case (every replica agrees)
needs no decoding until the answer.

:func:`request` is the hot-path RPC send: on an open pooled connection of the
:class:`~ringkv.net.transport.RpcClient` the frame is queued directly and a plain future
returned (no Task, no coroutine, and with ``send_timed`` no timer per request); otherwise,
or if the transport's internals change, it falls back to ``RpcClient.call``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from ringkv import coordinator as co
from ringkv import versions
from ringkv.errors import RingkvError
from ringkv.net import transport
from ringkv.net.transport import RpcClient
from ringkv.sim import bugs as _bugs

log = logging.getLogger(__name__)

# RpcClient internals used by request()'s fast path; absent -> RpcClient.call is used.
_EXPIRE = getattr(transport, "_expire", None)


def join_bytes(a: bytes | None, b: bytes | None) -> bytes | None:
    """Join two encoded version sets (None = no version)."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    return versions.merge_bytes(a, b)


def request(rpc: RpcClient, host: str, port: int, method: str, body: dict,
            timeout: float) -> asyncio.Future:
    """Send one RPC; a future of the reply that fails with Timeout after ``timeout``."""
    pool = getattr(rpc, "_pool", None)
    slots = pool.get((host, port)) if pool is not None and _EXPIRE is not None else None
    conn = slots[0] if slots else None
    if conn is None or conn.lost:
        return asyncio.ensure_future(rpc.call(host, port, method, body, timeout))
    send_timed = getattr(conn, "send_timed", None)
    if send_timed is not None:  # the real transport: no timer per request
        return send_timed(method, body, timeout)[1]
    rid, fut = conn.send(method, body)
    timer = conn.loop.call_later(timeout, _EXPIRE, conn, rid, fut, method, timeout)
    fut.add_done_callback(lambda f: timer.cancel())
    return fut


class WriteOp:
    """One coordinated write of an already minted version set ``data``.

    REQUIRES: :meth:`run` starts in the same event-loop step as the ``Node._mint`` that
    made ``data`` (no await in between): the local write is stored as a base that shadows
    the key's older entries, which is right only if none arrived after the mint read them.
    """

    __slots__ = ("node", "q", "skey", "data", "done", "stand_ins")

    def __init__(self, node: Any, q: co.WriteQuorum, skey: bytes, data: bytes,
                 stand_ins: dict[str, str] | None = None) -> None:
        self.node, self.q, self.skey, self.data = node, q, skey, data
        self.stand_ins = stand_ins  # owner -> node storing its hint (ringkv.hints, sloppy quorum)
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()

    async def run(self) -> Any:
        """Send to the other replicas, write locally meanwhile, return the outcome."""
        node, q = self.node, self.q
        timer = asyncio.get_running_loop().call_later(node.timeout, self.expire)
        body = {"skey": self.skey, "vs": self.data}
        for target in [t for t in q.contacted if t in q.pending]:  # list order: deterministic
            if target != node.node_id:
                stand_in = self.stand_ins.get(target) if self.stand_ins else None
                if stand_in is None:
                    fut = node._request(target, "replica_put", body)
                else:  # its durable ack counts as the owner's
                    fut = node._request(stand_in, "hint_put", dict(body, target=target))
                fut.add_done_callback(functools.partial(self.on_reply, target))
        try:
            # applied now, durable later; a base: the coordinator minted ``data`` from its
            # whole local set in this same loop step (Node._mint), so it shadows the older
            # entries and later reads of the key stop here instead of merging them again
            fut = node.engine.aput_nowait(self.skey, self.data, base=True)
            if fut is not None:
                await fut
            self.settle(q.ack(node.node_id))
        except RingkvError as exc:
            log.error("local write failed: %s", exc)
            self.settle(q.fail(node.node_id))
        outcome = self.done.result() if self.done.done() else await self.done
        timer.cancel()
        return outcome

    def settle(self, outcome: Any) -> None:
        if outcome is not None and not self.done.done():
            self.done.set_result(outcome)

    def on_reply(self, target: str, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.node.handoff.missed(target, self.skey, self.data)  # a hint for the replica
            self.settle(self.q.fail(target))
        else:
            self.settle(self.q.ack(target))

    def expire(self) -> None:
        self.settle(self.q.timeout())


class ReadOp:
    """One coordinated read: the quorum, its timer, replies, spares and read repair.

    ``done`` gets the outcome as soon as the quorum is met (or cannot be); the op lives on
    until every contacted replica answered or the timer fired, then repairs stale replicas.
    """

    __slots__ = ("node", "q", "skey", "replicas", "done", "timer", "body")

    def __init__(self, node: Any, req: co.Requirement, skey: bytes, replicas: list[str],
                 targets: list[str]) -> None:
        loop = asyncio.get_running_loop()
        self.node, self.skey, self.replicas = node, skey, replicas
        self.q = co.ReadQuorum(req, targets, join_bytes, None)
        self.done: asyncio.Future = loop.create_future()
        self.timer: asyncio.TimerHandle | None = loop.call_later(node.timeout, self.expire)
        self.body = {"skey": skey}
        local = False
        for target in targets:
            if target == node.node_id:
                local = True
            else:
                self.send(target)
        if local:  # after the sends: the local read overlaps with the network
            try:
                self.settle(self.q.reply(node.node_id, node.engine.get(skey)))
            except RingkvError as exc:
                log.error("local read failed: %s", exc)
                self.fail(node.node_id)
            self.maybe_finish()

    def send(self, target: str) -> None:
        fut = self.node._request(target, "replica_get", self.body)
        fut.add_done_callback(functools.partial(self.on_reply, target))

    def settle(self, outcome: Any) -> None:
        if outcome is not None and not self.done.done():
            self.done.set_result(outcome)

    def on_reply(self, target: str, fut: asyncio.Future) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.fail(target)
        else:
            vs = fut.result().get("vs")
            self.settle(self.q.reply(target, vs if type(vs) is bytes else None))
        self.maybe_finish()

    def fail(self, target: str) -> None:
        """A replica failed: ask a live replica not yet contacted instead, if any."""
        if self.q.outcome is None:
            for spare in co.spare_targets(self.replicas, self.q.contacted, self.node.alive)[:1]:
                self.q.add(spare)
                self.send(spare)
        self.settle(self.q.fail(target))

    def expire(self) -> None:
        self.settle(self.q.timeout())
        self.maybe_finish()

    def maybe_finish(self) -> None:
        """Once every contacted replica answered (or the timer fired): read repair."""
        q = self.q
        if not q.complete or self.timer is None:
            return
        self.timer.cancel()
        self.timer = None
        if q.merged is not None and self.node.config.cluster.read_repair:
            merged = q.merged
            if _bugs.ACTIVE and "stale_read_repair" in _bugs.ACTIVE:  # deliberate bug (ringkv/sim/bugs.py)
                merged = _bugs.stale_repair(q.replies, merged)
            for target in q.repairs():
                self.node._repair(target, self.skey, merged)


__all__ = ["ReadOp", "WriteOp", "join_bytes", "request"]
