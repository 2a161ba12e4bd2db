"""Merkle anti-entropy, the shell: engine scans, the repair RPCs, jobs and their schedule.

The protocol and its decisions are in :mod:`ringkv.antientropy` (pure) and the trees in
:mod:`ringkv.merkle` (pure); this module only carries out their effects:

- :class:`Responder` answers a peer's session from the local engine: ``merkle_open``
  (build and keep a tree), ``merkle_level``, ``merkle_keys``, ``repair_get``,
  ``repair_put``, and ``merkle_root`` (the convergence check of the chaos checker).
- :func:`drive` runs one :class:`~ringkv.antientropy.Session` against a ``call`` function
  (an RPC to the peer, or an in-process responder in ``bench/antientropy.py``), counting
  the msgpack bytes each way.
- :class:`Repairer` is what the node holds: a repair *job* (every range this node
  replicates, or one token range) run with every other live replica of each range, its
  progress for ``repair_status``, and the background schedule (``repair.interval_s``).

Engine scans and tree builds run on a worker thread, so the event loop keeps serving (they
hold the GIL while hashing, so a large build still slows the node: docs/repair.md).
At most one job runs per node; the responder keeps at most ``MAX_TREES`` trees, each for
at most ``TREE_TTL_S`` seconds.
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
from ringkv.ring import scan_bounds

log = logging.getLogger(__name__)

MAX_TREES = 2  # trees a responder keeps for sessions in progress (a 1M-key tree is ~60 MB)
TREE_TTL_S = 600.0  # a kept tree is dropped after this long
RPC_TIMEOUT_S = 300.0  # a peer may need this long to build a tree of a large range
REPLY_BYTES = 4 << 20  # repair_get answers a prefix of about this many bytes
MAX_SESSION_STEPS = 1_000_000  # bound on effects per session (each is a bounded message)
MAX_JOBS_KEPT = 16
MAX_LEVEL_HASHES = 1 << 20  # hashes in one merkle_level reply (8 MiB)
SESSION_ATTEMPTS = 2  # a failed session is retried once (its tree stays valid: updates are incremental)

Call = Callable[[str, dict], Awaitable[dict]]


# -- engine side -------------------------------------------------------------------------


def scan_range(engine: Any, start: int, end: int):
    """Every ``(skey, vs)`` the engine holds in the token range ``(start, end]``."""
    for lo, hi in scan_bounds(start, end):
        yield from engine.scan(lo, hi)


def build_tree(engine: Any, start: int, end: int, depth: int = merkle.DEFAULT_DEPTH) -> merkle.MerkleTree:
    """A tree of the engine's data in ``(start, end]`` (one scan; call off the loop)."""
    return merkle.build(start, end, scan_range(engine, start, end), depth)


def scan_ranges(engine: Any, ranges: list[tuple[int, int]]) -> list[tuple[bytes, bytes]]:
    return [item for s, e in ranges for item in scan_range(engine, s, e)]


async def off_loop(fn: Callable, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def apply_items(engine: Any, items: list[tuple[bytes, bytes]]) -> None:
    """Write version sets (merge = join); concurrent so group commit shares the fsyncs."""
    await asyncio.gather(*(engine.aput(k, v) for k, v in items))


class Responder:
    """The peer side of a session, over one engine."""

    def __init__(self, engine_of: Callable[[], Any], monotonic: Callable[[], float] = time.monotonic,
                 max_depth: int = merkle.MAX_DEPTH) -> None:
        self.engine_of, self.monotonic, self.max_depth = engine_of, monotonic, max_depth
        self._trees: dict[int, tuple[merkle.MerkleTree, float]] = {}
        self._ids = itertools.count(1)

    def handlers(self) -> dict[str, Callable[[dict], Any]]:
        return {"merkle_open": self.merkle_open, "merkle_level": self.merkle_level,
                "merkle_keys": self.merkle_keys, "merkle_root": self.merkle_root,
                "repair_get": self.repair_get, "repair_put": self.repair_put}

    async def merkle_open(self, body: dict) -> dict:
        start, end = _token(body, "start"), _token(body, "end")
        depth = _int(body, "depth", 0, self.max_depth)
        tree = await off_loop(build_tree, self.engine_of(), start, end, depth)
        now = self.monotonic()
        self._trees = {k: v for k, v in self._trees.items() if now - v[1] < TREE_TTL_S}
        while len(self._trees) >= MAX_TREES:
            del self._trees[min(self._trees)]
        sid = next(self._ids)
        self._trees[sid] = (tree, now)
        return {"sid": sid, "count": tree.count, "root": tree.root()}

    async def merkle_level(self, body: dict) -> dict:
        entry = self._trees.get(body.get("sid"))  # type: ignore[arg-type]
        if entry is None:
            raise InvalidRequest("unknown or expired merkle session")
        tree = entry[0]
        level = _int(body, "level", 0, tree.depth)
        step = _int(body, "step", 1, min(8, tree.depth - level))
        nodes = _unpack(merkle.unpack_indices, body.get("nodes"))
        if len(nodes) << step > MAX_LEVEL_HASHES or any(n >> level for n in nodes):
            raise InvalidRequest("merkle_level: too many hashes asked or an index outside the level")
        hashes = await off_loop(tree.children, level, nodes, step)  # may fold a large level
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
            versions.decode(item[1])  # refuse a malformed set before it reaches the engine
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
                "seconds": round(self.seconds if self.state != "running" else now - self.started, 3),
                "errors": self.errors[-10:]}


class Repairer:
    """The node's anti-entropy: RPC handlers, jobs and the background schedule.

    Needs from the node: ``engine``, ``ring``, ``node_id``, ``alive(id)``, ``_addr``,
    ``rpc``, ``clock``, ``config.repair``."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.responder = Responder(lambda: node.engine, node.clock.monotonic)
        self.params = ae.Params()
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None

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
        job = self.jobs.get(job_id) if job_id is not None else (
            self.jobs[max(self.jobs)] if self.jobs else None)  # type: ignore[arg-type]
        if job is None:
            raise InvalidRequest(f"no repair job {job_id}")
        return job.view(self.node.clock.monotonic())

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
        tree = await off_loop(build_tree, node.engine, task.start, task.end, merkle.DEFAULT_DEPTH)
        job.build_seconds += node.clock.monotonic() - t0
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
           "apply_items"]
