"""Hinted handoff on a node: the asyncio shell around :mod:`ringkv.hints` and the store.

What the node gets from here (``node.handoff``):

- :meth:`Handoff.plan` - the write plan of a key (live home replicas, stand-ins for down
  ones in sloppy mode); node.py counts a replica with a stand-in as available and
  ``node_ops.WriteOp`` sends its copy as ``hint_put`` to the stand-in, whose ack counts as
  the owner's.
- :meth:`Handoff.rpc_hint_put` - the ``hint_put`` RPC ``{skey, vs, target}``: append the
  hint to the durable store and answer only after the fsync that covers it (concurrent
  hints share one fsync: group commit on a worker thread). Over the per-target bound it
  answers ``Overloaded`` and the hint does not count.
- :meth:`Handoff.missed` / :meth:`Handoff.after_write` - the coordinator's own hints, for a
  replica that failed or timed out on a write and for a down replica without a stand-in.
  They are written in the background and never count toward W.
- A background task that every ``replay_interval_s`` drops expired hints and, for each
  target that membership says is alive, sends its hints with ``replica_put`` in batches of
  ``replay_batch``; a segment is deleted only after every hint in it was acked. Hints for
  a target that was *removed* go to the keys' current replicas instead (docs/decisions.md
  D23), this node included when it is one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from ringkv import hints, versions
from ringkv.errors import Corruption, InvalidRequest, Overloaded, RingkvError, Unavailable
from ringkv.hint_store import Hint, HintStore, Segment
from ringkv.ring import token_of
from ringkv.sim import bugs as _bugs

log = logging.getLogger(__name__)


class Handoff:
    """The hinted-handoff side of one node (see the module docstring)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.config = node.config.hints
        self.mode = self.config.mode
        self.store: HintStore | None = None
        self._queue: list[tuple[Hint, asyncio.Future]] = []
        self._flushing = False
        self._task: asyncio.Task | None = None
        self._all_live: dict[tuple[str, ...], hints.WritePlan] = {}  # replicas -> plan, all up

    async def open(self) -> "Handoff":
        root = os.path.join(self.node.config.node.data_dir, "hints")
        cfg = self.config
        self.store = await asyncio.get_running_loop().run_in_executor(
            None, HintStore, root, cfg.max_hints_per_target, cfg.max_hint_age_s,
            getattr(self.node, "fs", None))
        return self

    def start(self) -> None:
        """Start the replay task (after membership is running)."""
        self._task = asyncio.ensure_future(self._replay_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self.store is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.store.close)

    # ----- write path -------------------------------------------------------------

    def plan(self, token: int, replicas: list[str]) -> hints.WritePlan:
        node = self.node
        alive, me = node.membership.alive, node.node_id
        for r in replicas:
            if r != me and not alive(r):
                break
        else:  # every home replica is up (the usual case): one plan per preference list
            plan = self._all_live.get(tuple(replicas))
            if plan is None:
                if len(self._all_live) > 10_000:
                    self._all_live.clear()
                plan = self._all_live[tuple(replicas)] = hints.WritePlan(tuple(replicas))
            return plan
        walk = node.ring.walk(token) if self.mode == "sloppy" else []
        return hints.plan_write(replicas, walk, alive, self.mode, me, node._dc_of)

    def missed(self, target: str, skey: bytes, vs: bytes) -> None:
        """A replica (or its stand-in) failed a write: keep a local hint for it."""
        if hints.keeps_hints(self.mode) and target != self.node.node_id and self.store:
            fut = asyncio.ensure_future(self.add(target, skey, vs))
            fut.add_done_callback(_log_failure)

    def after_write(self, plan: hints.WritePlan, skey: bytes, vs: bytes) -> None:
        """After a write went out: local hints for the down replicas nobody stood in for."""
        for owner in plan.missing:
            self.missed(owner, skey, vs)

    async def rpc_hint_put(self, body: dict) -> dict:
        skey, vs, target = body.get("skey"), body.get("vs"), body.get("target")
        if type(skey) is not bytes or len(skey) < 9 or type(vs) is not bytes \
                or type(target) is not str or not target:
            raise InvalidRequest("hint_put needs skey (bytes), vs (bytes), target (str)")
        versions.check(vs)
        if target == self.node.node_id:  # we are the owner (ring views differ): just apply
            await self.node.engine.aput(skey, vs)
            self.node.moved_writes.after_apply(skey, vs)  # ... unless we gave the range up
            return {}
        if not hints.keeps_hints(self.mode) or self.store is None:
            raise Unavailable(1, 0, "hinted handoff is off on this node")
        await self.add(target, skey, vs)
        return {}

    async def add(self, target: str, skey: bytes, vs: bytes) -> None:
        """Store one hint durably (group commit); raises Overloaded over the bound."""
        assert self.store is not None
        if not self.store.reserve(target):
            raise Overloaded(f"hint store for {target} is full "
                             f"(hints.max_hints_per_target={self.config.max_hints_per_target})")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.append((Hint(target, skey, vs, self.node.clock.now()), fut))
        if not self._flushing:
            self._flushing = True
            asyncio.ensure_future(self._flush())
        await fut

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for _ in range(1_000_000):  # bounded: each round takes everything queued
                if not self._queue:
                    break
                batch, self._queue = self._queue, []
                try:
                    failed = await loop.run_in_executor(None, self.store.write,  # type: ignore[union-attr]
                                                        [h for h, _ in batch])
                except Exception as exc:  # noqa: BLE001 - fail the batch, keep serving
                    log.error("hint write failed: %s", exc)
                    failed = {h.target for h, _ in batch}
                for h, fut in batch:
                    if fut.done():
                        continue
                    if h.target in failed:
                        fut.set_exception(Unavailable(1, 0, f"hint for {h.target} not stored"))
                    else:
                        fut.set_result(None)
        finally:
            self._flushing = False

    # ----- replay -----------------------------------------------------------------

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.replay_interval_s)
            try:
                await self.replay_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the replay loop must keep running
                log.exception("hint replay round failed")

    async def replay_once(self) -> int:
        """One round: expire, then replay every live target's hints. Hints replayed."""
        store, node = self.store, self.node
        if store is None or not store.pending():
            return 0
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, store.expire, node.clock.now())
        targets = [t for t in store.targets() if t != node.node_id]
        live = [t for t in targets if t in node._addr and node.alive(t)]
        # a removed target's hints go to the keys' current replicas instead (D23)
        gone = [t for t in targets if t not in node._addr
                and hints.redirects(node.membership.state_of(t))]
        # targets in parallel (one slow target does not hold up the others), each in order
        return sum(await asyncio.gather(*(self._replay_target(t) for t in live),
                                        *(self._replay_target(t, True) for t in gone)))

    async def _replay_target(self, target: str, redirect: bool = False) -> int:
        loop = asyncio.get_running_loop()
        store = self.store
        assert store is not None
        done = 0
        for seg in await loop.run_in_executor(None, store.seal, target):
            sent = await self._replay_segment(target, seg, redirect)
            if sent is None:
                break
            done += sent
        return done

    def _send_hint(self, target: str, hint: Hint, redirect: bool) -> list[asyncio.Future]:
        """The replica writes (futures) that deliver one hint: to its target, or, for a
        removed target, to the current replicas of the key (this node included, locally)."""
        node = self.node
        body = {"skey": hint.skey, "vs": hint.vs}
        if not redirect:
            return [node._request(target, "replica_put", body)]
        dests = node._view.forward_targets(token_of(hint.skey), target)
        futs = [asyncio.ensure_future(node.engine.aput(hint.skey, hint.vs)) if d == node.node_id
                else node._request(d, "replica_put", body) for d in dests
                if d == node.node_id or d in node._addr]
        if not futs:  # no ring to send it to (yet): keep the hint
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(Unavailable(1, 0, "no replica known for a redirected hint"))
            futs.append(fut)
        return futs

    async def _replay_segment(self, target: str, seg: Segment,
                              redirect: bool = False) -> int | None:
        """Send one segment's live hints; delete it once all were acked. None = stop."""
        loop = asyncio.get_running_loop()
        store = self.store
        assert store is not None
        try:
            found = await loop.run_in_executor(None, store.read, seg)
        except Corruption as exc:
            log.error("hint segment unreadable, quarantined (repair covers it): %s", exc)
            await loop.run_in_executor(None, store.quarantine, seg)
            return 0
        now = self.node.clock.now()
        live = [h for h in found if not hints.expired(h.created, now, self.config.max_hint_age_s)]
        if _bugs.ACTIVE and "hint_replay_dropped" in _bugs.ACTIVE:  # deliberate bug (ringkv/sim/bugs.py)
            live = []
        for start, end in hints.replay_batches(len(live), self.config.replay_batch):
            futs = [f for h in live[start:end] for f in self._send_hint(target, h, redirect)]
            results = await asyncio.gather(*futs, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                log.info("hint replay to %s paused: %s", target, errors[0])
                return None
        await loop.run_in_executor(None, store.remove, seg, len(live), len(found) - len(live))
        if redirect:
            self.node.counters["hints_redirected"] += len(live)
        log.info("%s %d hints %s %s", "redirected" if redirect else "replayed", len(live),
                 "of removed" if redirect else "to", target)
        return len(live)

    # ----- introspection ----------------------------------------------------------

    def status(self) -> dict:
        """The ``hints`` field of the status reply."""
        if self.store is None:
            return {"mode": self.mode, "pending": {}}
        return {"mode": self.mode, "pending": self.store.pending(), **self.store.stats()}


def _log_failure(fut: asyncio.Future) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        exc = fut.exception()
        level = logging.INFO if isinstance(exc, RingkvError) else logging.ERROR
        log.log(level, "local hint not stored: %s", exc)


__all__ = ["Handoff"]
