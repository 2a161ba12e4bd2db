"""Merkle anti-entropy, the shell: engine scans, kept trees, the repair RPCs, jobs and their schedule.

The protocol and its decisions are in :mod:`ringkv.antientropy` (pure), the trees in
:mod:`ringkv.merkle` (pure) and the rules for keeping them in :mod:`ringkv.merkle_cache`
(pure); this module only carries out their effects:

- :class:`~ringkv.repair_trees.TreeStore` (with the engine scans, in
  ``ringkv/repair_trees.py``) lends trees to sessions: a kept tree refreshed by rescanning
  the segments written since its last use (the node's engine is a
  :class:`~ringkv.write_tracker.TrackedEngine`), or one built by a full scan.
- :class:`Responder` answers a peer's session from the local engine: ``merkle_open``
  (check out a tree for the session), ``merkle_level``, ``merkle_keys``, ``repair_get``,
  ``repair_put``, ``merkle_close`` (check it back in), and ``merkle_root`` (the
  convergence check of the chaos checker: always a fresh full scan).
- :func:`drive` runs one :class:`~ringkv.antientropy.Session` against a ``call`` function
  (an RPC to the peer, or an in-process responder in ``bench/antientropy.py``), counting
  the msgpack bytes each way.
- :class:`Repairer` is what the node holds: the write tracker, the tree cache, a repair
  *job* (every range this node replicates, or one token range) run with every other live
  replica of each range, its progress for ``repair_status``, and the background schedule
  (``repair.interval_s``).

Engine scans and tree builds run on a worker thread, so the event loop keeps serving (they
hold the GIL while hashing, so a large build still slows the node: docs/repair.md). The
tracker's mark is taken on the loop before a rescan's engine snapshots (see
ringkv/write_tracker.py for why that makes a refreshed tree exact). At most one job runs
per node; the responder lends at most ``MAX_SESSIONS`` trees at once, each until the
initiator's ``merkle_close`` or ``TREE_TTL_S`` seconds without a request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any, Awaitable, Callable

import msgpack

from ringkv import antientropy as ae
from ringkv import merkle, versions
from ringkv.errors import InvalidRequest, RingkvError
from ringkv.merkle_cache import Checkout, TreeCache
from ringkv.repair_trees import (TreeStore, apply_items, build_tree, iter_ranges, off_loop,
                                 rescan_tree, scan_range, scan_ranges)
from ringkv.write_tracker import TrackedEngine, WriteTracker

log = logging.getLogger(__name__)

MAX_SESSIONS = 2  # trees a responder lends to sessions in progress (a 1M-key tree is ~170 MB)
TREE_TTL_S = 600.0  # a session's tree is checked back in after this long without a request
RPC_TIMEOUT_S = 300.0  # a peer may need this long to build a tree of a large range
REPLY_BYTES = 4 << 20  # repair_get answers a prefix of about this many bytes
MAX_SESSION_STEPS = 1_000_000  # bound on effects per session (each is a bounded message)
MAX_JOBS_KEPT = 16
MAX_LEVEL_HASHES = 1 << 20  # hashes in one merkle_level reply (8 MiB)
SESSION_ATTEMPTS = 2  # a failed session is retried once (its tree stays valid: updates are incremental)

Call = Callable[[str, dict], Awaitable[dict]]


# -- engine side: ringkv/repair_trees.py ------------------------------------------------


class _Lent:
    """A tree lent to a peer's session; ``inflight`` requests are reading it."""

    __slots__ = ("co", "used", "inflight", "ended")

    def __init__(self, co: Checkout, now: float) -> None:
        self.co, self.used, self.inflight, self.ended = co, now, 0, False


class Responder:
    """The peer side of a session, over one engine."""

    def __init__(self, engine_of: Callable[[], Any], monotonic: Callable[[], float] = time.monotonic,
                 max_depth: int = merkle.MAX_DEPTH, store: TreeStore | None = None) -> None:
        self.engine_of, self.monotonic, self.max_depth = engine_of, monotonic, max_depth
        self.store = store or TreeStore(engine_of, None, monotonic)
        self._sessions: dict[int, _Lent] = {}
        self._ids = itertools.count(1)

    def handlers(self) -> dict[str, Callable[[dict], Any]]:
        return {"merkle_open": self.merkle_open, "merkle_level": self.merkle_level,
                "merkle_keys": self.merkle_keys, "merkle_root": self.merkle_root,
                "merkle_close": self.merkle_close,
                "repair_get": self.repair_get, "repair_put": self.repair_put}

    async def merkle_open(self, body: dict) -> dict:
        start, end = _token(body, "start"), _token(body, "end")
        depth = _int(body, "depth", 0, self.max_depth)
        co = await self.store.checkout(start, end, depth)
        tree = co.tree
        assert tree is not None
        if body.get("root") == tree.root() and body.get("count") == tree.count:
            self.store.checkin(co)  # equal: the initiator asks nothing more
            return {"sid": 0, "count": tree.count, "root": tree.root()}
        now = self.sweep()
        while len(self._sessions) >= MAX_SESSIONS:
            self._end(min(self._sessions))
        sid = next(self._ids)
        self._sessions[sid] = _Lent(co, now)
        return {"sid": sid, "count": tree.count, "root": tree.root()}

    def sweep(self) -> float:
        """Check in the trees of sessions idle for ``TREE_TTL_S`` (an initiator that died
        never sends ``merkle_close``); returns the time now."""
        now = self.monotonic()
        for sid, lent in list(self._sessions.items()):
            if now - lent.used >= TREE_TTL_S:
                self._end(sid)
        return now

    def merkle_close(self, body: dict) -> dict:
        """The initiator is done with session ``sid``: its tree goes back to the cache."""
        sid = body.get("sid")
        if type(sid) is int and sid in self._sessions:
            self._end(sid)
        return {}

    def _end(self, sid: int) -> None:
        lent = self._sessions.pop(sid)
        lent.ended = True
        if not lent.inflight:  # else the request still reading the tree checks it in
            self.store.checkin(lent.co)

    def close(self) -> None:
        for sid in list(self._sessions):
            self._end(sid)

    async def merkle_level(self, body: dict) -> dict:
        sid = body.get("sid")
        lent = self._sessions.get(sid) if type(sid) is int else None
        if lent is None:
            raise InvalidRequest("unknown or expired merkle session")
        lent.used = self.monotonic()
        tree = lent.co.tree
        assert tree is not None
        level = _int(body, "level", 0, tree.depth)
        step = _int(body, "step", 1, min(8, tree.depth - level))
        nodes = _unpack(merkle.unpack_indices, body.get("nodes"))
        if len(nodes) << step > MAX_LEVEL_HASHES or any(n >> level for n in nodes):
            raise InvalidRequest("merkle_level: too many hashes asked or an index outside the level")
        lent.inflight += 1
        try:
            hashes = await off_loop(tree.children, level, nodes, step)  # may fold a large level
        finally:
            lent.inflight -= 1
            if lent.ended and not lent.inflight:
                self.store.checkin(lent.co)
        return {"hashes": merkle.pack_hashes(hashes)}

    async def merkle_keys(self, body: dict) -> dict:
        start, end = _token(body, "start"), _token(body, "end")
        depth = _int(body, "depth", 0, self.max_depth)
        buckets = _unpack(merkle.unpack_indices, body.get("buckets"))
        ranges = merkle.bucket_ranges(start, end, depth, [b for b in buckets if not b >> depth])
        items = await off_loop(scan_ranges, self.engine_of(), ranges)
        return {"keys": [k for k, _ in items],
                "hashes": merkle.pack_hashes([merkle.entry_hash(k, v) for k, v in items])}

    async def merkle_root(self, body: dict) -> dict:
        start, end = _token(body, "start"), _token(body, "end")
        tree = await off_loop(build_tree, self.engine_of(), start, end, 0)
        return {"root": tree.root(), "count": tree.count}

    def repair_get(self, body: dict) -> dict:
        skeys = body.get("skeys")
        if type(skeys) is not list or not all(type(k) is bytes for k in skeys):
            raise InvalidRequest("repair_get needs skeys: [bytes]")
        engine, out, size = self.engine_of(), [], 0
        for skey in skeys:
            vs = engine.get(skey)
            out.append(vs)
            size += len(skey) + len(vs or b"")
            if size > REPLY_BYTES:
                break
        return {"vs": out}

    async def repair_put(self, body: dict) -> dict:
        items = body.get("items")
        if type(items) is not list:
            raise InvalidRequest("repair_put needs items: [[skey, vs]]")
        checked = []
        for item in items:
            if (type(item) is not list or len(item) != 2 or type(item[0]) is not bytes
                    or len(item[0]) < 9 or type(item[1]) is not bytes):
                raise InvalidRequest("repair_put item must be [skey (bytes), vs (bytes)]")
            versions.check(item[1])  # refuse a malformed set before it reaches the engine
            checked.append((item[0], item[1]))
        await apply_items(self.engine_of(), checked)
        return {"applied": len(checked)}


async def drive(session: ae.Session, call: Call, engine: Any) -> ae.Stats:
    """Carry out a session's effects until it is done; its stats, bytes included."""
    stats = session.stats
    effect = session.start()
    for _ in range(MAX_SESSION_STEPS):
        if isinstance(effect, ae.Done):
            return effect.stats
        result: Any = None
        if isinstance(effect, ae.Call):
            stats.bytes_sent += len(msgpack.packb(effect.body))
            result = await call(effect.method, effect.body)
            stats.bytes_received += len(msgpack.packb(result))
        elif isinstance(effect, ae.Scan):
            result = await off_loop(scan_ranges, engine, effect.ranges)
        elif isinstance(effect, ae.Apply):
            await apply_items(engine, effect.items)
        effect = await off_loop(session.feed, result)  # compares and folds large trees
    raise RingkvError("repair session did not finish within its step bound")


# -- the node's repair jobs ----------------------------------------------------------------


class Job:
    """One run of ``repair``: progress and totals, as ``repair_status`` reports them."""

    def __init__(self, job_id: int, only: tuple[int, int] | None, now: float) -> None:
        self.id, self.only, self.started = job_id, only, now
        self.state, self.ranges_total, self.ranges_done, self.sessions = "running", 0, 0, 0
        self.skipped_peers, self.build_seconds, self.seconds = 0, 0.0, 0.0
        self.full_builds = self.refreshes = self.keys_rescanned = self.leaves_rescanned = 0
        self.stats = ae.Stats()
        self.errors: list[str] = []

    def view(self, now: float) -> dict:
        s = self.stats
        return {"id": self.id, "state": self.state, "range": list(self.only) if self.only else None,
                "ranges_total": self.ranges_total, "ranges_done": self.ranges_done,
                "sessions": self.sessions, "skipped_peers": self.skipped_peers,
                "keys_sent": s.keys_sent, "keys_received": s.keys_received,
                "keys_compared": s.keys_compared, "differing_buckets": s.differing_buckets,
                "bytes_sent": s.bytes_sent, "bytes_received": s.bytes_received,
                "rounds": s.rounds, "build_seconds": round(self.build_seconds, 3),
                "tree_full_builds": self.full_builds, "tree_refreshes": self.refreshes,
                "leaves_rescanned": self.leaves_rescanned, "keys_rescanned": self.keys_rescanned,
                "seconds": round(self.seconds if self.state != "running" else now - self.started, 3),
                "errors": self.errors[-10:]}


class Repairer:
    """The node's anti-entropy: RPC handlers, jobs and the background schedule.

    Needs from the node: ``engine`` (wrapped by :meth:`track` when the node opens it),
    ``ring``, ``node_id``, ``alive(id)``, ``_addr``, ``rpc``, ``clock``, ``config.repair``."""

    def __init__(self, node: Any) -> None:
        self.node = node
        cfg = node.config.repair
        self.tracker = WriteTracker()
        self.store = TreeStore(lambda: node.engine,
                               TreeCache(self.tracker, cfg.tree_cache_trees, cfg.tree_cache_bytes,
                                         cfg.tree_max_age_s),
                               node.clock.monotonic)
        self.responder = Responder(lambda: node.engine, node.clock.monotonic, store=self.store)
        self.params = ae.Params()
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None

    def track(self, engine: Any) -> TrackedEngine:
        """``engine`` with every write noted for the tree cache: the node's engine must be
        opened through this (a write that bypasses it leaves kept trees stale until
        ``repair.tree_max_age_s``)."""
        return TrackedEngine(engine, self.tracker)

    def handlers(self) -> dict[str, Callable[[dict], Any]]:
        return {**self.responder.handlers(), "repair": self.rpc_repair,
                "repair_status": self.rpc_repair_status}

    def start(self) -> None:
        """Start the background schedule (``repair.interval_s``; 0 = off)."""
        interval = self.node.config.repair.interval_s
        if interval > 0:
            self._timer = asyncio.get_running_loop().call_later(interval, self._on_timer)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
        self.responder.close()

    def _on_timer(self) -> None:
        if self._task is None or self._task.done():
            self.begin(None)
        self.start()

    # -- RPCs ---------------------------------------------------------------------------

    def rpc_repair(self, body: dict) -> dict:
        only = None
        if body.get("start") is not None or body.get("end") is not None:
            only = (_token(body, "start"), _token(body, "end"))
        if self._task is not None and not self._task.done():
            return {"id": max(self.jobs), "already_running": True}
        return {"id": self.begin(only).id, "already_running": False}

    def rpc_repair_status(self, body: dict) -> dict:
        job_id = body.get("id")
        if job_id is not None and type(job_id) is not int:
            raise InvalidRequest("id must be an integer (a repair job's id), or absent for the latest")
        job = self.jobs.get(job_id) if job_id is not None else (
            self.jobs[max(self.jobs)] if self.jobs else None)
        if job is None:
            raise InvalidRequest(f"no repair job {job_id}")
        return dict(job.view(self.node.clock.monotonic()), tree_cache=self.store.view())

    # -- jobs ---------------------------------------------------------------------------

    def begin(self, only: tuple[int, int] | None) -> Job:
        job = Job(next(self._ids), only, self.node.clock.monotonic())
        self.jobs[job.id] = job
        for old in sorted(self.jobs)[:-MAX_JOBS_KEPT]:
            del self.jobs[old]
        self._task = asyncio.ensure_future(self._run(job))
        return job

    async def _run(self, job: Job) -> None:
        node = self.node
        try:
            ring = node.ring
            tasks = ae.plan(ring.ranges(), ring.replicas, node.node_id, job.only)
            job.ranges_total = len(tasks)
            for task in tasks:
                await self._repair_range(job, task)
                job.ranges_done += 1
            job.state = "done" if not job.errors else "failed"
        except asyncio.CancelledError:
            job.state = "cancelled"
            raise
        except Exception as exc:  # noqa: BLE001 - a job reports its failure, never kills the node
            log.exception("repair job %s failed", job.id)
            job.errors.append(f"{type(exc).__name__}: {exc}")
            job.state = "failed"
        finally:
            job.seconds = node.clock.monotonic() - job.started
            log.info("repair job %s %s: %s", job.id, job.state, job.view(node.clock.monotonic()))

    async def _repair_range(self, job: Job, task: ae.Task) -> None:
        node = self.node
        t0 = node.clock.monotonic()
        self.responder.sweep()  # a tree held by a dead peer's session would stay lent
        co = await self.store.checkout(task.start, task.end, merkle.DEFAULT_DEPTH)
        job.build_seconds += node.clock.monotonic() - t0
        if co.buckets is None:
            job.full_builds += 1
        else:
            job.refreshes += 1
            job.leaves_rescanned += len(co.buckets)
            job.keys_rescanned += co.keys_rescanned
        ok = False
        try:
            await self._sessions(job, task, co)
            ok = True
        finally:  # a session that failed midway may leave the tree half updated: drop it
            self.store.checkin(co, ok)

    async def _sessions(self, job: Job, task: ae.Task, co: Checkout) -> None:
        node, tree = self.node, co.tree
        assert tree is not None
        for peer in task.peers:
            if not node.alive(peer) or peer not in node._addr:
                job.skipped_peers += 1
                continue
            host, port = node._addr[peer]

            async def call(method: str, body: dict, host: str = host, port: int = port) -> dict:
                return await node.rpc.call(host, port, method, body, RPC_TIMEOUT_S)

            for attempt in range(SESSION_ATTEMPTS):  # e.g. the peer dropped our tree for newer ones
                session = ae.Session(tree, self.params)
                try:
                    await drive(session, call, node.engine)
                    error = None
                except RingkvError as exc:
                    error = f"({task.start}, {task.end}] with {peer}: {exc}"
                job.stats.add(session.stats)
                if error is None or not node.alive(peer):
                    break
            if error is not None:
                job.errors.append(error)
            job.sessions += 1


def _token(body: dict, name: str) -> int:
    return _int(body, name, 0, merkle.MASK)


def _int(body: dict, name: str, lo: int, hi: int) -> int:
    value = body.get(name)
    if type(value) is not int or not lo <= value <= hi:
        raise InvalidRequest(f"{name} must be an integer in {lo}..{hi}")
    return value


def _unpack(fn: Callable[[bytes], list[int]], data: object) -> list[int]:
    if type(data) is not bytes:
        raise InvalidRequest("packed indices must be bytes")
    try:
        return fn(data)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


__all__ = ["Responder", "Repairer", "Job", "drive", "build_tree", "scan_range", "scan_ranges",
           "iter_ranges", "rescan_tree", "TreeStore", "off_loop", "apply_items"]
