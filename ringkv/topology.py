"""Membership changes while serving, the asyncio shell: join, replace, decommission, removenode.

The decisions (ring views, pending replicas, plans, progress) are in :mod:`ringkv.streaming`;
this module carries them out for one :class:`~ringkv.node.Node`:

- RPCs served by every node: ``stream_range`` {start, end, after?, limit_bytes?} -> {items:
  [[skey, vs], ...], next: skey | None} (a page of one token range, scanned off the event
  loop; ``next`` None = the range is finished), ``stream_apply`` {items} -> {} once durable,
  ``decommission`` {}, ``removenode`` {node_id}, ``streams`` {} (progress).
- One operation at a time per node, run as a background task: settle (wait until every
  live member sees our new state, then one request timeout so writes routed by the old
  ring drain), plan, stream task by task and batch by batch, finish (publish the new
  state). A batch is applied with ``engine.aput`` (a join, so re-streaming is harmless) and
  only then the cursor is persisted in ``data_dir/streaming.json``: an interrupted
  operation resumes where it stopped when the node starts again.
- Startup: ``streaming.join`` on a fresh data dir starts the node ``joining``;
  ``streaming.replace = ID`` on a fresh data dir first asks the seeds for the dead node's
  tokens and writes this node's identity with them (a NEW node id: a node id never mints
  a dot twice); an unfinished operation found on disk is resumed; a node that was
  decommissioned refuses to start.

docs/topology.md describes the operations and their guarantees.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from ringkv import coordinator as co
from ringkv import streaming as st
from ringkv import versions
from ringkv.errors import ConfigError, InvalidRequest, RingkvError, Unavailable
from ringkv.identity import FILE_NAME as IDENTITY_FILE
from ringkv.identity import Identity
from ringkv.identity import write as write_identity
from ringkv.membership_record import JOINING, LEAVING, NORMAL, REMOVED
from ringkv.streaming_io import load_progress, save_progress, scan_page

log = logging.getLogger(__name__)

STATE_FILE = "streaming.json"
MAX_ITEMS = 100_000  # items accepted in one stream_apply
RETRIES_PER_SOURCE = 3
MAX_BATCHES_PER_TASK = 10_000_000  # a bound, far above any range's batch count
OP_ATTEMPTS = 3  # a failed operation is retried this often before it stays failed


class TopologyManager:
    """Runs this node's membership operations and serves the streaming RPCs."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.cfg = node.config.streaming
        self.path = Path(node.config.node.data_dir) / STATE_FILE
        self.progress: st.Progress | None = None
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------ node hooks

    def handlers(self) -> dict[str, Any]:
        return {"stream_range": self._rpc_stream_range, "stream_apply": self._rpc_stream_apply,
                "decommission": self._rpc_decommission, "removenode": self._rpc_removenode,
                "streams": lambda body: self.summary() or {}}

    async def prepare(self) -> None:
        """Before the identity is loaded: resume, refuse, or set up a join or replace."""
        self.progress = self._load()
        p = self.progress
        if p is not None and p.op == "decommission" and p.finished:
            raise ConfigError("node.data_dir", f"this node was decommissioned; remove "
                                               f"{self.node.config.node.data_dir} to join again")
        fresh = not (Path(self.node.config.node.data_dir) / IDENTITY_FILE).exists()
        if p is not None and not p.finished:
            if p.op == "replace" and fresh:  # crashed before the identity was written
                await self._prepare_replace(p.replacing)
            return  # resume it
        if fresh and self.cfg.replace:
            await self._refuse_if_seeds_see_moving("replace", self.node.config.node.node_id or "",
                                                   (self.cfg.replace,))
            await self._prepare_replace(self.cfg.replace)
        elif fresh and self.cfg.join:
            await self._refuse_if_seeds_see_moving("join", self.node.config.node.node_id or "")
            self.progress = st.Progress("join", self.node.config.node.node_id or "")
            self._save()

    def initial_state(self) -> str:
        """The state this node publishes when it starts."""
        p = self.progress
        if p is None or p.finished:
            return NORMAL
        return {"join": JOINING, "replace": JOINING, "decommission": LEAVING}.get(p.op, NORMAL)

    def start(self) -> None:
        """After membership started: run an unfinished operation."""
        p = self.progress
        if p is not None and not p.finished:
            if p.op in ("join", "replace", "decommission"):
                p.subject = self.node.node_id
            self._spawn()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass

    def summary(self) -> dict[str, Any] | None:
        """Progress of the current (or last) operation, for ``status`` and ``streams``."""
        return None if self.progress is None else self.progress.summary()

    def write_requirement(self, req: co.Requirement, pending: list[str],
                          counts: Any = None) -> co.Requirement:
        """The write requirement with pending replicas (W + P); Unavailable if too few
        will ack (``counts``: home replicas that ack, alive or stood in for)."""
        node = self.node
        req = st.with_pending(req, pending, node._dc_of)
        unavailable = co.check_alive(
            req, lambda n: (n in pending and node.alive(n)) or (counts or node.alive)(n))
        if unavailable is not None:
            node.counters["unavailable"] += 1
            raise unavailable
        return req

    # ------------------------------------------------------------ RPCs

    async def _rpc_stream_range(self, body: dict) -> dict:
        start, end = _token(body, "start"), _token(body, "end")
        after = body.get("after")
        if after is not None and type(after) is not bytes:
            raise InvalidRequest("stream_range: after must be bytes or nil")
        limit = body.get("limit_bytes") or self.cfg.batch_bytes
        if type(limit) is not int or limit <= 0:
            raise InvalidRequest("stream_range: limit_bytes must be a positive int")
        limit = min(limit, self.node.limits.max_frame_bytes // 2)
        items, nxt = await self._scan(start, end, after, limit)
        return {"items": [[k, v] for k, v in items], "next": nxt}

    async def _scan(self, start: int, end: int, after: bytes | None,
                    limit: int) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        engine = self.node.engine
        return await asyncio.get_running_loop().run_in_executor(
            None, scan_page, engine, start, end, after, limit)

    async def _rpc_stream_apply(self, body: dict) -> dict:
        items = body.get("items")
        if not isinstance(items, list) or len(items) > MAX_ITEMS:
            raise InvalidRequest(f"stream_apply: items must be a list of at most {MAX_ITEMS}")
        pairs = []
        for item in items:
            if (not isinstance(item, (list, tuple)) or len(item) != 2
                    or type(item[0]) is not bytes or len(item[0]) < 9 or type(item[1]) is not bytes):
                raise InvalidRequest("stream_apply: each item is [skey (bytes), vs (bytes)]")
            versions.check(item[1])
            pairs.append((item[0], item[1]))
        await self._apply_local(pairs)
        return {}

    async def _apply_local(self, pairs: list[tuple[bytes, bytes]]) -> None:
        engine = self.node.engine
        await asyncio.gather(*(engine.aput(k, v) for k, v in pairs))

    def _rpc_decommission(self, body: dict) -> dict:
        node, m = self.node, self.node.membership
        p = self.progress
        if p is not None and p.op == "decommission" and not p.finished:
            if self._task is None or self._task.done():
                self._spawn()
            return p.summary()
        self._check_idle()
        if m.state_of(node.node_id) != NORMAL:
            raise InvalidRequest(f"cannot decommission a node in state {m.state_of(node.node_id)}")
        self._refuse_if_moving("decommission", node.node_id, (node.node_id,))
        left = [n for n in node.ring.nodes if n.node_id != node.node_id and n.dc == node.dc]
        if len(left) < node.replication.get(node.dc, 0) or not node.ring.nodes:
            raise InvalidRequest(f"cannot decommission: {len(left)} nodes would be left in "
                                 f"{node.dc}, fewer than its replication factor "
                                 f"{node.replication.get(node.dc, 0)}")
        self.progress = st.Progress("decommission", node.node_id)
        self._save()
        node._perform(m.set_state(LEAVING))
        self._spawn()
        return self.progress.summary()

    def _rpc_removenode(self, body: dict) -> dict:
        target = body.get("node_id")
        if not isinstance(target, str) or not target:
            raise InvalidRequest("removenode needs node_id (str)")
        node, m = self.node, self.node.membership
        p = self.progress
        if p is not None and p.op == "removenode" and p.subject == target and not p.finished:
            if self._task is None or self._task.done():
                self._spawn()
            return p.summary()
        self._check_idle()
        if target == node.node_id:
            raise InvalidRequest("a node cannot remove itself; use decommission")
        state = m.state_of(target)
        if state is None or state == REMOVED:
            raise InvalidRequest(f"{target} is not a member of the ring")
        if state != "down":
            raise InvalidRequest(f"{target} is {state}, not down: decommission a live node "
                                 "instead (removenode is for dead nodes)")
        self._refuse_if_moving("removenode", target, (target,))
        self.progress = st.Progress("removenode", target)
        self._save()
        self._spawn()
        return self.progress.summary()

    def _refuse_if_moving(self, op: str, subject: str, exclude: Any) -> None:
        """InvalidRequest if another member is joining or leaving: one range movement at
        a time (as Cassandra's consistent range movement); see docs/topology.md."""
        others = st.moving(self.node._view.owners, exclude)
        if others:
            raise InvalidRequest(_concurrent_move(op, subject, others))

    async def _refuse_if_seeds_see_moving(self, op: str, subject: str, exclude: Any = ()) -> None:
        """Before a fresh join or replace publishes anything: ask the seeds' ``ring`` and
        refuse (the node does not start) if a member is joining or leaving. Best effort:
        with no seed answering, the check after the settle step decides."""
        node = self.node
        for seed in node.config.node.seeds:
            host, _, port = seed.rpartition(":")
            try:
                reply = await node.rpc.call(host or "127.0.0.1", int(port), "ring", {},
                                            node.timeout)
            except (RingkvError, ValueError):
                continue
            skip = set(exclude) | {subject}
            others = sorted((str(n.get("node_id")), str(n.get("published", n.get("state"))))
                            for n in reply.get("nodes", []) if n.get("node_id") not in skip)
            others = [(i, state) for i, state in others if state in (JOINING, LEAVING)]
            if others:
                raise InvalidRequest(_concurrent_move(op, subject or "this node", others))
            return
        log.warning("%s: no seed answered; checking for other membership changes after "
                    "the settle step", op)

    def _check_idle(self) -> None:
        p = self.progress
        if p is not None and not p.finished and p.status != "failed":
            raise InvalidRequest(f"busy: {p.op} of {p.subject} is {p.status}")
        if p is not None and not p.finished and p.op in ("join", "replace", "decommission"):
            raise InvalidRequest(f"this node's {p.op} is unfinished ({p.status}); it resumes "
                                 "when the node restarts")

    # ------------------------------------------------------------ running an operation

    def _spawn(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        p = self.progress
        assert p is not None
        for attempt in range(1, OP_ATTEMPTS + 1):
            try:
                await self._run_once(p)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded, retried, then left failed
                p.status, p.error = "failed", f"{type(exc).__name__}: {exc}"
                log.error("%s of %s failed (attempt %d of %d): %s", p.op, p.subject, attempt,
                          OP_ATTEMPTS, p.error)
                await self._save_async()
                if attempt < OP_ATTEMPTS:
                    await asyncio.sleep(self.cfg.retry_interval_s)

    async def _run_once(self, p: st.Progress) -> None:
        if not p.planned:
            if p.op in ("join", "replace", "decommission"):
                p.status = "waiting"
                await self._save_async()
                await self._settle(JOINING if p.op != "decommission" else LEAVING)
            # the settled view may show a move that started concurrently with ours: one
            # of them goes on, the others stop here (failed, still published; safe)
            others = st.moving(self.node._view.owners, (p.subject, p.replacing))
            first = st.yields_to(p.op, p.subject, others)
            if first:
                raise InvalidRequest(_concurrent_move(p.op, p.subject, first))
            if others:
                log.warning("%s of %s goes first; concurrent: %s", p.op, p.subject, others)
            p.plan(self._make_plan(p))
            log.info("%s of %s: %d ranges to stream", p.op, p.subject, len(p.tasks))
        p.status, p.error = "streaming", ""
        await self._save_async()
        for _ in range(len(p.tasks) + 1):
            index = p.next_task()
            if index is None:
                break
            await self._stream_task(p, index)
            log.info("%s of %s: %d/%d ranges, %d keys, %d bytes", p.op, p.subject,
                     len(p.done), len(p.tasks), p.keys, p.bytes)
        p.status = "finishing"
        await self._save_async()
        await self._finish(p)
        p.status = "done"
        await self._save_async()
        log.info("%s of %s done: %d keys, %d bytes", p.op, p.subject, p.keys, p.bytes)
        if p.op == "decommission" and self.cfg.exit_after_decommission:
            _exit_soon()

    def _make_plan(self, p: st.Progress) -> list[st.StreamTask]:
        node = self.node
        view = node._view
        alive = node.alive
        if p.op == "join":
            return st.join_plan(view, self._my_info(), alive)
        if p.op == "replace":
            return st.replace_plan(view, self._my_info(), p.replacing, alive)
        if p.op == "decommission":
            return st.leave_plan(view, node.node_id)
        return st.remove_plan(view, p.subject, alive)

    def _my_info(self) -> Any:
        from ringkv.ring import NodeInfo

        node = self.node
        me = node.membership.self_member
        return NodeInfo(me.node_id, me.tokens, me.dc, me.rack, me.host, me.port, me.http_port)

    async def _settle(self, state: str) -> None:
        """Wait (bounded) until every live peer reports us in ``state`` and lists no node
        we do not know; then one request timeout, so writes routed by the old ring drain."""
        node = self.node
        deadline = node.clock.monotonic() + self.cfg.settle_timeout_s  # the node clock: virtual in ringkv.sim
        interval = node.membership_config.gossip_interval_s
        while node.clock.monotonic() < deadline:
            if await self._agreed(state):
                break
            await asyncio.sleep(interval)
        else:
            log.warning("ring did not settle on %s within %.0fs; streaming anyway", state,
                        self.cfg.settle_timeout_s)
        await asyncio.sleep(node.timeout)

    async def _agreed(self, state: str) -> bool:
        node, m = self.node, self.node.membership
        known = {x.node_id for x in m.members()}
        peers = [x.node_id for x in m.live_members() if x.node_id != node.node_id]
        if not peers and node.config.node.seeds:
            return False  # we have not heard from the cluster yet
        for peer in peers:
            host, port = node._addr.get(peer, (None, None))
            if host is None:
                return False
            try:
                reply = await node.rpc.call(host, port, "ring", {}, node.timeout)
            except RingkvError:
                return False
            listed = {n["node_id"]: n.get("state") for n in reply.get("nodes", [])}
            if listed.get(node.node_id) != state or not set(listed) <= known:
                return False
        return True

    async def _stream_task(self, p: st.Progress, index: int) -> None:
        task = p.tasks[index]
        tried: list[str] = []
        failures = 0
        for _ in range(RETRIES_PER_SOURCE * (len(task.sources) + 1)):
            src = st.first_live(task.sources, self.node.alive, tried)
            if src is None:
                break
            try:
                await self._copy(p, index, task, src)
                return
            except (RingkvError, OSError) as exc:
                failures += 1
                log.warning("streaming %s from %s to %s failed: %s", (task.start, task.end),
                            src, task.target, exc)
                if failures % RETRIES_PER_SOURCE == 0:
                    tried.append(src)
                await asyncio.sleep(min(2.0, 0.2 * failures))
        raise Unavailable(1, 0, f"no live source could stream range ({task.start}, "
                                f"{task.end}] to {task.target} (tried {tried or task.sources})")

    async def _copy(self, p: st.Progress, index: int, task: st.StreamTask, src: str) -> None:
        for _ in range(MAX_BATCHES_PER_TASK):
            after = p.cursors.get(index)
            items, nxt = await self._fetch(src, task, after)
            if items:
                await self._apply(task.target, items)
            nbytes = sum(len(k) + len(v) for k, v in items)
            p.advance(index, items[-1][0] if items else after, len(items), nbytes, nxt is None)
            await self._save_async()
            if self.cfg.max_bytes_per_s > 0 and nbytes:
                await asyncio.sleep(nbytes / self.cfg.max_bytes_per_s)
            if nxt is None:
                return

    async def _fetch(self, src: str, task: st.StreamTask,
                     after: bytes | None) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        node = self.node
        if src == node.node_id:
            return await self._scan(task.start, task.end, after, self.cfg.batch_bytes)
        host, port = node._addr[src]
        reply = await node.rpc.call(host, port, "stream_range",
                                    {"start": task.start, "end": task.end, "after": after,
                                     "limit_bytes": self.cfg.batch_bytes},
                                    self.cfg.batch_timeout_s)
        items = [(bytes(k), bytes(v)) for k, v in reply.get("items") or []]
        for k, _v in items:
            if not st.in_bounds(k, task.start, task.end):
                raise InvalidRequest(f"{src} streamed a key outside the range")
        nxt = reply.get("next")
        return items, (nxt if type(nxt) is bytes else None)

    async def _apply(self, target: str, items: list[tuple[bytes, bytes]]) -> None:
        node = self.node
        if target == node.node_id:
            await self._apply_local(items)
            return
        host, port = node._addr[target]
        await node.rpc.call(host, port, "stream_apply", {"items": [[k, v] for k, v in items]},
                            self.cfg.batch_timeout_s)

    async def _finish(self, p: st.Progress) -> None:
        node, m = self.node, self.node.membership
        if p.op == "join":
            node._perform(m.set_state(NORMAL))
        elif p.op == "replace":
            node._perform(m.remove_node(p.replacing) + m.set_state(NORMAL))
        elif p.op == "removenode":
            node._perform(m.remove_node(p.subject))
        elif p.op == "decommission":
            node._perform(m.set_state(REMOVED))
            node.left_ring = True  # replica reads are refused from now on (node_replica.py)
            await self._wait_forgotten()

    async def _wait_forgotten(self) -> None:
        """Bounded: until no live peer lists us in its ring any more."""
        node = self.node
        deadline = node.clock.monotonic() + self.cfg.settle_timeout_s  # the node clock: virtual in ringkv.sim
        while node.clock.monotonic() < deadline:
            peers = [x for x in node.membership.live_members() if x.node_id != node.node_id]
            gone = 0
            for peer in peers:
                try:
                    reply = await node.rpc.call(peer.host, peer.port, "ring", {}, node.timeout)
                except RingkvError:
                    continue
                if all(n["node_id"] != node.node_id for n in reply.get("nodes", [])):
                    gone += 1
            if gone >= len(peers):
                return
            await asyncio.sleep(node.membership_config.gossip_interval_s)

    # ------------------------------------------------------------ replace setup

    async def _prepare_replace(self, dead: str) -> None:
        cfg = self.node.config.node
        if cfg.node_id == dead:
            raise ConfigError("streaming.replace", "a replacement must use a new node id "
                              "(a node id must never mint the same version dot twice)")
        entry = await self._find_dead(dead)
        node_id = cfg.node_id or f"node-{os.urandom(4).hex()}"
        ident = Identity(node_id, tuple(int(t) for t in entry["tokens"]),
                         str(entry.get("dc", cfg.dc)), str(entry.get("rack", cfg.rack)))
        self.progress = st.Progress("replace", node_id, replacing=dead)
        self._save()
        write_identity(Path(cfg.data_dir) / IDENTITY_FILE, ident)

    async def _find_dead(self, dead: str) -> dict:
        """The ``ring`` entry of ``dead`` as a seed reports it; it must be down."""
        node = self.node
        errors = []
        for seed in node.config.node.seeds:
            host, _, port = seed.rpartition(":")
            try:
                reply = await node.rpc.call(host or "127.0.0.1", int(port), "ring", {},
                                            node.timeout)
            except (RingkvError, ValueError) as exc:
                errors.append(f"{seed}: {exc}")
                continue
            for n in reply.get("nodes", []):
                if n.get("node_id") == dead:
                    if n.get("state") != "down":
                        raise ConfigError("streaming.replace", f"{dead} is {n.get('state')} "
                                          f"according to {seed}; only a dead node is replaced")
                    return n
            errors.append(f"{seed}: does not know {dead}")
        raise ConfigError("streaming.replace", f"cannot find {dead} through the seeds "
                          f"({'; '.join(errors) or 'no seeds configured'})")

    # ------------------------------------------------------------ persistence

    def _load(self) -> st.Progress | None:
        return load_progress(self.path)

    def _save(self) -> None:
        assert self.progress is not None
        save_progress(self.path, json.dumps(self.progress.to_dict()))

    async def _save_async(self) -> None:
        assert self.progress is not None
        text = json.dumps(self.progress.to_dict())
        await asyncio.get_running_loop().run_in_executor(None, save_progress, self.path, text)


def _concurrent_move(op: str, subject: str, others: list[tuple[str, str]]) -> str:
    moving = ", ".join(f"{i} is {state}" for i, state in others)
    return (f"cannot {op} {subject}: {moving}; ringkv runs one membership change at a time "
            "(wait until it finishes, or removenode it if it died, then retry)")


def _exit_soon() -> None:
    """SIGTERM ourselves, so the server shuts down cleanly; only when something handles
    SIGTERM (``ringkv.server`` does; a node run inside a test process is left alone)."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
        log.info("decommissioned; no SIGTERM handler, so the process keeps running")
        return
    asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)


def _token(body: dict, name: str) -> int:
    value = body.get(name)
    if type(value) is not int or not 0 <= value <= st.MAX_TOKEN:
        raise InvalidRequest(f"stream_range: {name} must be a token (0 .. 2**64-1)")
    return value


__all__ = ["TopologyManager", "STATE_FILE"]
