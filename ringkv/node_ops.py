"""The asyncio side of one coordinated read or write: the shell around a quorum.

:class:`ReadOp` and :class:`WriteOp` feed the pure state machines of
:mod:`ringkv.coordinator` with replies, failures and their timeout, and carry out what
they decide (answer, contact a spare replica, read repair). They hold no policy of their
own. The timeout is an entry in the node's :class:`~ringkv.deadlines.Deadlines` (every
op has the same timeout, so one queue and one timer serve them all; a timer per op cost
~3 us of a ~50 us get). The node they serve provides: ``node_id``, ``timeout``,
``deadlines``, ``engine``, ``alive(node_id)``,
``_request(node_id, method, body) -> Future``, ``_repair(node_id, skey, merged)``,
``config.cluster.read_repair`` and ``handoff`` (:mod:`ringkv.handoff`: writes to a down
replica go to its stand-in as ``hint_put``; a replica that fails a write gets a hint).

Version sets travel and are joined as encoded bytes (:func:`join_bytes`): the encoding is
canonical, so equal sets are equal bytes and the common case (every replica agrees)
needs no decoding until the answer.

Replica writes are batched (:class:`ReplicaWriter`): the copies a node's writes send to
one peer within one event-loop turn travel as one ``replica_put_batch`` request (one
frame, one reply future and timeout entry, one durability wait and one reply on the
replica) instead of one ``replica_put`` each; a turn with a single copy for a peer sends
a plain ``replica_put``. A peer that answers ``unknown method`` (an older version during
a rolling upgrade) gets single ``replica_put`` requests for ``LEGACY_RETRY_S`` seconds,
the batch's copies resent that way at once, before the batch is tried again.

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
from ringkv.errors import InvalidRequest, RingkvError, StorageFull, Unavailable, from_wire
from ringkv.net import transport
from ringkv.net.transport import RpcClient
from ringkv.sim import bugs as _bugs

log = logging.getLogger(__name__)

# RpcClient internals used by request()'s fast path; absent -> RpcClient.call is used.
_EXPIRE = getattr(transport, "_expire", None)

BATCH_METHOD = "replica_put_batch"
BATCH_MAX_ITEMS = 512  # copies per batch request; more in one turn start another batch
_ITEM_OVERHEAD = 16  # bytes of msgpack framing per [skey, vs] item, rounded up
LEGACY_RETRY_S = 60.0  # how long a peer that refused a batch gets single replica_puts


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

    __slots__ = ("node", "q", "skey", "data", "done", "stand_ins", "deadline")

    def __init__(self, node: Any, q: co.WriteQuorum, skey: bytes, data: bytes,
                 stand_ins: dict[str, str] | None = None) -> None:
        self.node, self.q, self.skey, self.data = node, q, skey, data
        self.stand_ins = stand_ins  # owner -> node storing its hint (ringkv.hints, sloppy quorum)
        self.done: asyncio.Future = node._loop.create_future()
        self.deadline = -1  # its id in node.deadlines once run() starts (-1: none, discard is a no-op)

    def run(self) -> asyncio.Future:
        """Send to the other replicas, write locally meanwhile; the future of the outcome.
        (Not a coroutine: the caller awaits the future itself, one frame less per put.)"""
        node, q = self.node, self.q
        self.deadline = node.deadlines.add(self)  # expire() after node.timeout unless settled
        me, pending, stand_ins = node.node_id, q.pending, self.stand_ins
        for target in q.contacted:  # list order: deterministic
            if target == me or target not in pending:
                continue
            stand_in = stand_ins.get(target) if stand_ins else None
            if stand_in is None:  # batched with this turn's other copies for target
                node.replica_writes.send(target, self.skey, self.data, self)
            else:  # its durable ack counts as the owner's
                fut = node._request(stand_in, "hint_put",
                                    {"skey": self.skey, "vs": self.data, "target": target})
                fut.add_done_callback(functools.partial(_single_done, self, target))
        try:
            # applied now, durable later; a base: the coordinator minted ``data`` from its
            # whole local set in this same loop step (Node._mint), so it shadows the older
            # entries and later reads of the key stop here instead of merging them again
            fut = node.engine.aput_nowait(self.skey, self.data, base=True)
        except RingkvError as exc:
            self._local_failed(exc)
        else:
            if fut is None:
                self.settle(q.ack(me))
            else:  # a callback, not an await: the put resumes once, for its outcome
                fut.add_done_callback(self._local_durable)
        return self.done

    def _local_durable(self, fut: asyncio.Future) -> None:
        """The local copy's durability wait ended: its ack, or its failure."""
        exc = _LOCAL_CANCELLED if fut.cancelled() else fut.exception()
        if exc is None:
            self.settle(self.q.ack(self.node.node_id))
        else:
            self._local_failed(exc)

    def _local_failed(self, exc: BaseException) -> None:
        if type(exc) is not StorageFull:  # the engine logs when it starts and stops refusing
            log.error("local write failed: %s", exc)
        self.settle(self.q.fail(self.node.node_id, exc))

    def settle(self, outcome: Any) -> None:
        if outcome is not None and not self.done.done():
            self.done.set_result(outcome)
            self.node.deadlines.discard(self.deadline)

    def on_ack(self, target: str, exc: BaseException | None) -> None:
        """``target`` acknowledged its copy (``exc`` None) or failed to store it."""
        if exc is None:
            if not self.done.done():  # an ack after the outcome (the spare one) changes nothing
                self.settle(self.q.ack(target))
        else:
            self.node.handoff.missed(target, self.skey, self.data)  # a hint for the replica
            self.settle(self.q.fail(target, exc))

    def expire(self) -> None:
        self.settle(self.q.timeout())


def _single_done(op: WriteOp, target: str, fut: asyncio.Future) -> None:
    """The reply to one ``replica_put``/``hint_put`` of ``op``'s copy for ``target``."""
    op.on_ack(target, _CANCELLED if fut.cancelled() else fut.exception())


_CANCELLED = Unavailable(1, 0, "replica write cancelled")
_LOCAL_CANCELLED = Unavailable(1, 0, "local write's durability wait cancelled")


class _Batch:
    """The copies bound for one peer in this loop turn: (skey, vs, op) and their size."""

    __slots__ = ("items", "size")

    def __init__(self) -> None:
        self.items: list[tuple[bytes, bytes, WriteOp]] = []
        self.size = 0


class ReplicaWriter:
    """Sends a node's replica copies, batched per peer and loop turn (module doc).

    ``send`` queues one copy; the first copy of a turn schedules :meth:`flush` with
    ``call_soon``, so every write coordinated in this turn (every put read from every
    connection in one read callback) shares its peer's request. Each copy's outcome goes
    to ``op.on_ack(target, exc)``: the batch's reply acks every copy it does not list as
    failed; an error reply or no reply fails every copy of the batch.
    """

    __slots__ = ("node", "_open", "_scheduled", "_legacy", "_max_bytes", "_extra")

    def __init__(self, node: Any, extra: dict | None = None) -> None:
        self.node = node
        self._extra = extra  # fields added to every request body (ringkv.moved_writes)
        self._open: dict[str, _Batch] = {}
        self._scheduled = False
        self._legacy: dict[str, float] = {}  # peer -> loop time until which it gets singles
        # half a frame: the batch, its framing and a reply always fit in max_frame_bytes
        self._max_bytes = node.limits.max_frame_bytes // 2

    def send(self, target: str, skey: bytes, vs: bytes, op: Any) -> None:
        """Queue ``op``'s copy ``vs`` of ``skey`` for replica ``target``; ``op`` is a
        :class:`WriteOp` or anything else with its ``on_ack(target, exc)``."""
        size = len(skey) + len(vs) + _ITEM_OVERHEAD
        batch = self._open.get(target)
        if batch is None:
            batch = self._open[target] = _Batch()
            if not self._scheduled:
                self._scheduled = True
                self.node._loop.call_soon(self.flush)
        elif batch.size + size > self._max_bytes or len(batch.items) >= BATCH_MAX_ITEMS:
            self._send(target, batch)  # full: send it now, start the next one
            batch = self._open[target] = _Batch()
        batch.items.append((skey, vs, op))
        batch.size += size

    def flush(self) -> None:
        """Send every batch queued in this turn (scheduled by ``send``)."""
        self._scheduled = False
        batches, self._open = self._open, {}
        for target, batch in batches.items():
            self._send(target, batch)

    def _send(self, target: str, batch: _Batch) -> None:
        items = batch.items
        if len(items) == 1 or (self._legacy and self._is_legacy(target)):
            self._send_singles(target, items)
            return
        body = {"items": [[skey, vs] for skey, vs, _op in items]}
        if self._extra:
            body.update(self._extra)
        try:
            fut = self.node._request(target, BATCH_METHOD, body)
        except Exception as exc:  # noqa: BLE001 - e.g. TooLarge while encoding: nothing was sent
            for _skey, _vs, op in items:
                op.on_ack(target, exc)
            return
        fut.add_done_callback(functools.partial(self._batch_done, target, items))

    def _send_singles(self, target: str, items: list[tuple[bytes, bytes, WriteOp]]) -> None:
        request, extra = self.node._request, self._extra
        for skey, vs, op in items:
            try:
                body = {"skey": skey, "vs": vs, **extra} if extra else {"skey": skey, "vs": vs}
                fut = request(target, "replica_put", body)
            except Exception as exc:  # noqa: BLE001 - a copy that cannot be sent fails
                op.on_ack(target, exc)
                continue
            fut.add_done_callback(functools.partial(_single_done, op, target))

    def _is_legacy(self, target: str) -> bool:
        until = self._legacy.get(target)
        if until is None:
            return False
        if self.node._loop.time() < until:
            return True
        del self._legacy[target]  # time to try batches again (the peer may be upgraded)
        return False

    def _batch_done(self, target: str, items: list[tuple[bytes, bytes, WriteOp]],
                    fut: asyncio.Future) -> None:
        exc = _CANCELLED if fut.cancelled() else fut.exception()
        if exc is not None:
            if type(exc) is InvalidRequest and "unknown method" in str(exc):
                # an older peer (rolling upgrade): resend the copies one by one, and
                # keep sending singles for a while
                log.info("%s does not know %s; sending it single replica_put for %gs",
                         target, BATCH_METHOD, LEGACY_RETRY_S)
                self._legacy[target] = self.node._loop.time() + LEGACY_RETRY_S
                self._send_singles(target, items)
                return
            for _skey, _vs, op in items:
                op.on_ack(target, exc)
            return
        failed = fut.result().get("failed")
        errors = _item_errors(failed, len(items)) if failed else None
        for i, (_skey, _vs, op) in enumerate(items):
            op.on_ack(target, errors.get(i) if errors else None)


def _item_errors(failed: Any, count: int) -> dict[int, RingkvError]:
    """``{index: error}`` from a batch reply's ``failed`` list of ``[index, wire error]``;
    a malformed list fails every item (the replica's answer cannot be trusted)."""
    errors: dict[int, RingkvError] = {}
    try:
        for i, wire in failed:
            errors[int(i)] = from_wire(wire if isinstance(wire, dict) else {"message": repr(wire)})
    except (TypeError, ValueError):
        err = InvalidRequest(f"malformed {BATCH_METHOD} reply")
        return dict.fromkeys(range(count), err)
    return errors


class ReadOp:
    """One coordinated read: the quorum, its timeout, replies, spares and read repair.

    ``done`` gets the outcome as soon as the quorum is met (or cannot be); the op lives on
    until every contacted replica answered or the timeout passed, then repairs stale
    replicas (``open`` is False from then on).
    """

    __slots__ = ("node", "q", "skey", "replicas", "done", "open", "deadline", "body")

    def __init__(self, node: Any, req: co.Requirement, skey: bytes, replicas: list[str],
                 targets: list[str]) -> None:
        self.node, self.skey, self.replicas = node, skey, replicas
        self.q = co.ReadQuorum(req, targets, join_bytes, None)
        self.done: asyncio.Future = node._loop.create_future()
        self.open = True
        self.deadline = node.deadlines.add(self)  # expire() after node.timeout unless finished
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
        """Once every contacted replica answered (or the timeout passed): read repair."""
        q = self.q
        if not q.complete or not self.open:
            return
        self.open = False
        self.node.deadlines.discard(self.deadline)
        if q.merged is not None and self.node.config.cluster.read_repair:
            merged = q.merged
            if _bugs.ACTIVE and "stale_read_repair" in _bugs.ACTIVE:  # deliberate bug (ringkv/sim/bugs.py)
                merged = _bugs.stale_repair(q.replies, merged)
            for target in q.repairs():
                self.node._repair(target, self.skey, merged)


__all__ = ["BATCH_METHOD", "ReadOp", "ReplicaWriter", "WriteOp", "join_bytes", "request"]
