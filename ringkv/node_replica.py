"""The replica side of a node: ``replica_get``, ``replica_put`` and ``replica_put_batch``.

A mixin of :class:`ringkv.node.Node`. These handlers answer other nodes' coordinators:
they read or apply encoded version sets in the engine (a replica write is a merge operand,
docs/decisions.md D20), refuse malformed ones before they reach it, answer a write only
once it is durable, refuse reads once the node has left the ring (decommissioned), and
hand writes for ranges this node gave up to :mod:`ringkv.moved_writes` (D23). Uses the
node's ``engine``, ``counters``, ``moved_writes`` and ``left_ring``.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from ringkv import node_ops as ops
from ringkv import versions
from ringkv.errors import InvalidRequest, RingkvError, Unavailable


class ReplicaHandlers:
    """The RPC handlers a node serves to coordinators (mixin of Node)."""

    def _rpc_replica_get(self, body: dict) -> dict:
        if self.left_ring:
            # Decommissioned: our copy stopped getting writes when the new owners' views
            # changed, but a coordinator that has not heard yet still reads here. Refused,
            # its read asks another replica instead (docs/topology.md, "Handover").
            raise Unavailable(1, 0, f"{self.node_id} has left the ring (decommissioned); "
                                    "it serves no replica reads")
        self.counters["replica_get"] += 1
        return {"vs": self.engine.get(_skey(body))}

    def _rpc_replica_put(self, body: dict) -> Any:
        skey, vs = _skey(body), body.get("vs")
        if type(vs) is not bytes:
            raise InvalidRequest("replica_put needs vs (bytes)")
        versions.check(vs)  # refuse a malformed set before it reaches the engine
        self.counters["replica_put"] += 1
        durable = self.engine.aput_nowait(skey, vs)  # a plain future: no Task per write
        if not body.get("forwarded"):  # a range this node gave up: forward too (D23)
            self.moved_writes.after_apply(skey, vs)
        if durable is None:
            return {}
        out = durable.get_loop().create_future()
        durable.add_done_callback(functools.partial(_reply_when_durable, out, {}))
        return out

    def _rpc_replica_put_batch(self, body: dict) -> Any:
        """Many ``replica_put`` in one request (``items``: a list of ``[skey, vs]``, see
        node_ops.ReplicaWriter): each valid item is applied as a merge operand; the reply,
        once every applied item is durable, is ``{}`` or ``{"failed": [[index, error]...]}``
        listing the items refused. One durability wait covers them all: the commit log is
        synced in order, so the last item durable means every earlier one is."""
        items = body.get("items")
        if type(items) is not list or not items:
            raise InvalidRequest(f"{ops.BATCH_METHOD} needs items: a list of [skey, vs]")
        aput_nowait, check = self.engine.aput_nowait, versions.check
        moved = None if body.get("forwarded") else self.moved_writes.after_apply  # D23
        failed = None
        applied = False
        i = -1
        for item in items:
            i += 1
            try:
                if type(item) is not list or len(item) != 2:
                    raise InvalidRequest("each item must be [skey, vs]")
                skey, vs = item
                if type(skey) is not bytes or len(skey) < 9 or type(vs) is not bytes:
                    raise InvalidRequest("item needs skey (8-byte token + key) and vs (bytes)")
                check(vs)  # refuse a malformed set before it reaches the engine
                aput_nowait(skey, vs, wait=False)  # one durability wait below, not one each
                if moved is not None:
                    moved(skey, vs)
            except RingkvError as exc:
                if failed is None:
                    failed = []
                failed.append([i, exc.to_wire()])
                continue
            applied = True
        self.counters["replica_put"] += len(items) - (len(failed) if failed else 0)
        reply = {"failed": failed} if failed else {}
        durable = self.engine.durable_nowait() if applied else None
        if durable is None:
            return reply
        out = durable.get_loop().create_future()
        durable.add_done_callback(functools.partial(_reply_when_durable, out, reply))
        return out


def _skey(body: dict) -> bytes:
    skey = body.get("skey")
    if type(skey) is not bytes or len(skey) < 9:
        raise InvalidRequest("skey must be bytes: 8-byte token + key")
    return skey

def _reply_when_durable(out: asyncio.Future, reply: dict, durable: asyncio.Future) -> None:
    """``replica_put``'s reply future: ``reply`` once the write is durable, else its error."""
    if out.done():
        return
    if durable.cancelled():
        out.cancel()
    elif durable.exception() is not None:
        out.set_exception(durable.exception())
    else:
        out.set_result(reply)


__all__ = ["ReplicaHandlers"]
