"""Writes that land on a node after their range moved away from it: forward, never strand.

A replica write can reach a node late: a hint replayed after the owner came back, a copy
the network delayed, a read repair or a coordinator working from a stale ring. If the
node has meanwhile given the key's range up (a join streamed it away, or the node is
decommissioning, or has finished), the range's new owner already streamed the range
from it and will never see that write: only anti-entropy would bring it there. So a
node that applies a ``replica_put``, ``replica_put_batch`` or ``hint_put`` for a key it
is not a future replica of also forwards the version set (docs/decisions.md D23, as
Riak's vnodes forward during and after handoff):

- the decision is pure: :meth:`ringkv.streaming.RingView.forward_targets` (the pending
  replicas when this node gives the range up; every replica when it holds none of it);
- the write is still applied locally first (never lose it; the sender's ack means the
  local copy, as before);
- the forwarded copies go through their own :class:`ringkv.node_ops.ReplicaWriter`
  (batched per peer and loop turn), marked ``forwarded: true``: a forwarded copy is
  never forwarded again, so two nodes whose ring views disagree cannot bounce it;
- a forwarded copy that fails becomes a hint for its target in the durable, bounded hint
  store, which hinted handoff delivers; a hint the store refuses (full, or hints
  ``off``) is counted as ``forward_dropped`` and logged, never lost silently: the other
  replicas still hold the write and anti-entropy repairs the new owner.

Counters (in ``status`` / ``/status`` ``counters`` and ``/metrics``):
``forwarded_after_move`` (copies forwarded), ``forward_hinted`` (failed copies kept as
hints), ``forward_dropped`` (failed copies neither delivered nor kept), and
``hints_redirected`` (hints for a *removed* node delivered to the keys' current replicas
instead, by :mod:`ringkv.handoff`: the same gap seen from the hint holder's side).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ringkv import hints
from ringkv import node_ops as ops
from ringkv.ring import token_of

log = logging.getLogger(__name__)

FORWARDED = {"forwarded": True}  # the body field that marks a forwarded replica write
COUNTERS = ("forwarded_after_move", "forward_hinted", "forward_dropped", "hints_redirected")


class MovedWrites:
    """The forwarding side of one node (see the module docstring)."""

    __slots__ = ("node", "writer")

    def __init__(self, node: Any) -> None:
        self.node = node
        self.writer = ops.ReplicaWriter(node, extra=FORWARDED)

    def after_apply(self, skey: bytes, vs: bytes) -> None:
        """A replica write of ``skey`` was applied here: forward it if this node is no
        future replica of its range. REQUIRES: the write was not itself forwarded."""
        node = self.node
        targets = node._view.forward_targets(token_of(skey), node.node_id)
        if not targets:
            return
        counters = node.counters
        for target in targets:
            if target in node._addr:
                counters["forwarded_after_move"] += 1
                self.writer.send(target, skey, vs, _Copy(self, skey, vs))

    def failed(self, target: str, skey: bytes, vs: bytes, exc: BaseException) -> None:
        """A forwarded copy failed: keep it as a hint for ``target`` (in the background)."""
        handoff = self.node.handoff
        if not hints.keeps_hints(handoff.mode) or handoff.store is None:
            self._dropped(target, f"hinted handoff is off ({exc})")
            return
        fut = asyncio.ensure_future(handoff.add(target, skey, vs))
        fut.add_done_callback(lambda f: self._hinted(target, f))

    def _hinted(self, target: str, fut: asyncio.Future) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if fut.cancelled() or exc is not None:
            self._dropped(target, str(exc) if exc is not None else "cancelled")
        else:
            self.node.counters["forward_hinted"] += 1

    def _dropped(self, target: str, why: str) -> None:
        self.node.counters["forward_dropped"] += 1
        log.warning("write for moved range not forwarded to %s, left to anti-entropy: %s",
                    target, why)


class _Copy:
    """One forwarded copy's outcome, as :class:`ringkv.node_ops.ReplicaWriter` reports it."""

    __slots__ = ("owner", "skey", "vs")

    def __init__(self, owner: MovedWrites, skey: bytes, vs: bytes) -> None:
        self.owner, self.skey, self.vs = owner, skey, vs

    def on_ack(self, target: str, exc: BaseException | None) -> None:
        if exc is not None:
            self.owner.failed(target, self.skey, self.vs, exc)


__all__ = ["MovedWrites", "FORWARDED", "COUNTERS"]
