"""One ringkv node: the asyncio shell around the pure modules.

The node owns the event loop side of things and nothing else: the storage engine (merge =
``versions.merge_bytes``), the RPC server and the pooled RPC client to peers, the gossip
timer driving :class:`ringkv.membership.Membership`, and the ring view built from it.
Decisions live in the pure modules: levels, Unavailable and quorum outcomes in
:mod:`ringkv.coordinator`, placement in :mod:`ringkv.ring`, versions in
:mod:`ringkv.versions`. The RPC methods are those of docs/architecture.md.

Write path (``put``/``delete``): a node that is not a replica of the key forwards the
request to one (first live replica, local dc first). The coordinating replica checks
liveness (``Unavailable`` before anything is written), reads its local version set, mints
the new dot with ``versions.update`` and sends ``replica_put`` to the other live replicas
while writing locally (``engine.aput``: durable per sync mode); it answers after W acks.
A down replica's copy goes to a stand-in as ``hint_put`` (sloppy quorum) and a replica
that fails a write gets a hint: :mod:`ringkv.handoff`, docs/hints.md.
Dot minting is serialised per key without locks: the read-update-register step runs
without an await, and a version not yet in the engine is kept in ``_minting`` until it is.

Read path (``get``): the coordinator reads its own replica directly (when it is one) and
sends ``replica_get`` to just enough other live replicas to meet R
(``coordinator.read_targets``); a replica that fails is replaced by a spare. A share
``cluster.full_read_chance`` of reads (and every read at a level that needs all replicas) goes to
every live replica. The answer goes back after R replies; late replies are still collected
until every contacted replica answered or the timeout fired, and those whose version set
differs from the join get it written (read repair). The per-request machinery is in
:mod:`ringkv.node_ops`; the gossip and ring-view shell in :mod:`ringkv.node_gossip` and
the handlers replicas serve to coordinators in :mod:`ringkv.node_replica` (mixins).

Client input never crashes the node: bad fields are ``InvalidRequest``, oversize keys and
values ``TooLarge``, and the transport answers any other exception with a generic error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
from typing import Any, Callable

import msgpack

from ringkv import coordinator as co
from ringkv import incarnation, peer_store, versions
from ringkv import node_ops as ops
from ringkv.clock import Clock, SystemClock
from ringkv.config import RingkvConfig
from ringkv.deadlines import Deadlines
from ringkv.errors import (Closed, InvalidRequest, Overloaded, RingkvError, Timeout, TooLarge,
                           Unavailable)
from ringkv.handoff import Handoff
from ringkv.identity import Identity, load_or_create
from ringkv.membership import Member, Membership
from ringkv.moved_writes import COUNTERS as MOVED_COUNTERS
from ringkv.moved_writes import MovedWrites
from ringkv.node_gossip import GossipShell
from ringkv.node_replica import ReplicaHandlers
from ringkv.net import auth, tls
from ringkv.net.transport import COROUTINE_TYPES, RpcClient, RpcServer
from ringkv.repair import Repairer
from ringkv.ring import Ring, token_for
from ringkv.snapshots import Snapshots
from ringkv.streaming import RingView
from ringkv.topology import TopologyManager

log = logging.getLogger(__name__)

EMPTY_CONTEXT = versions.encode_context({})
_EAGER_METHODS = frozenset(("put", "delete"))  # coroutines the RPC server drives without a Task
COUNTERS = ("get", "put", "delete", "forwarded", "replica_get", "replica_put", "read_repairs",
            "unavailable", "timeouts", "errors", "gossip_in", "gossip_out",
            "http_rejected_connections") + MOVED_COUNTERS


class Node(GossipShell, ReplicaHandlers):
    """A ringkv node. ``await start()``, serve, ``await close()``."""

    def __init__(self, config: RingkvConfig, *, clock: Clock | None = None,
                 rng: random.Random | None = None, server_factory: Callable | None = None,
                 client_factory: Callable | None = None, fs: Any = None,
                 scheduler: Any = None) -> None:
        # injection points for the deterministic simulator (ringkv/sim); None = real IO
        self.config = config.validate()
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.fs, self.scheduler = fs, scheduler  # engine + hint store file seam; engine defer()
        self._server_factory = server_factory or RpcServer
        self.membership_config = config.membership
        self.limits = config.limits
        self.timeout = config.cluster.request_timeout_ms / 1000.0
        self.replication = dict(config.cluster.replication)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.ident: Identity | None = None
        self.node_id = self.dc = ""  # set from the identity by start()
        self.resp_port = 0  # set by the server when it serves RESP
        self.engine: Any = None
        self.server: RpcServer | None = None
        # the cluster secret (D32): read once; every RPC connection, both ways, proves it
        sec = config.security
        self.secret = auth.read_secret_file(sec.secret_file) if sec.secret_file else None
        # TLS (D33): the context every listening port serves with, and the one for peers
        self.tls_server = self.tls_client = None
        if sec.tls:
            self.tls_server = tls.server_context(sec.tls_cert_file, sec.tls_key_file, sec.tls_ca_file,
                                                 require_client_cert=sec.tls_require_client_cert)
            self.tls_client = tls.client_context(sec.tls_ca_file, sec.tls_cert_file, sec.tls_key_file,
                                                 check_hostname=sec.tls_check_hostname)
        self.rpc = (client_factory or RpcClient)(config.limits.max_frame_bytes,
                                                 connect_timeout=self.timeout, secret=self.secret,
                                                 ssl=self.tls_client)
        self.membership: Membership | None = None
        self.fatal: asyncio.Event | None = None  # made in start(); the server stops on it
        self.left_ring = False  # set once this node published itself removed (decommissioned)
        self.fatal_error: RingkvError | None = None
        self.started_ms = 0  # this life's generation (node_gossip: set when gossip starts)
        self.ring = Ring([], self.replication)
        self._ring_sig: tuple = ()
        self._handover_ring: Any = None  # the read ring before a join finished, while writes still reach it
        self._handover_until = 0.0  # clock.monotonic() at which that handover ends
        self._addr: dict[str, tuple[str, int]] = {}
        self._dc_of: dict[str, str] = {}
        self._reqs: dict[tuple, co.Requirement] = {}  # (level, replicas) -> requirement
        self._minting: dict[bytes, bytes] = {}
        # the node's own Packer for the sets and contexts its puts mint (versions.encode):
        # used on the event loop's thread only (a Packer is not thread-safe)
        self._pack = msgpack.Packer().pack
        self._dot_floor = 0  # set by start() from data_dir/incarnation (D19)
        self._tick_handle: asyncio.TimerHandle | None = None
        self._auth_warned: dict[str, float] = {}  # peer -> when to log its refusal again
        self._loop: asyncio.AbstractEventLoop | None = None
        self.deadlines: Deadlines | None = None  # made in start(), on the node's loop
        self._restored: list[Member] = []  # peer records read from data_dir/peers.json
        self._peers_sig: tuple = ()  # what peers.json holds (or is being written with)
        self._peers_dirty = False
        self._peers_task: asyncio.Future | None = None
        self.handoff = Handoff(self)  # sloppy quorum + hinted handoff (ringkv/handoff.py)
        self.replica_writes = ops.ReplicaWriter(self)  # replica copies, batched per peer and turn
        self.moved_writes = MovedWrites(self)  # late writes for ranges given up: forwarded (D23)
        self._handlers: dict[str, Callable[[dict], Any]] = {
            "hint_put": self.handoff.rpc_hint_put,
            "get": self._rpc_get, "put": self._rpc_put, "delete": self._rpc_delete,
            "replica_get": self._rpc_replica_get, "replica_put": self._rpc_replica_put,
            ops.BATCH_METHOD: self._rpc_replica_put_batch,
            "ring": lambda body: self.ring_info(), "status": lambda body: self.status(),
            "ping": lambda body: {}, "gossip": self._rpc_gossip,
        }
        self.repairer = Repairer(self)  # Merkle anti-entropy (ringkv/repair.py)
        self._handlers.update(self.repairer.handlers())
        self.topology = TopologyManager(self)  # join/replace/decommission/removenode (ringkv/topology.py)
        self._handlers.update(self.topology.handlers())
        self.snapshots = Snapshots(self)  # ringkv snapshot (ringkv/snapshots.py)
        self._handlers.update(self.snapshots.handlers())
        self._view = RingView([], self.replication)  # read ring + pending replicas (ringkv/streaming.py)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> "Node":
        """Open the engine, listen, join the gossip. Returns once serving."""
        from ringkv.storage.engine import Engine

        self._loop = asyncio.get_running_loop()
        self.fatal = asyncio.Event()  # set when this node must stop (fatal_error says why)
        self.deadlines = Deadlines(self._loop, self.timeout)  # every coordinated op's timeout
        cfg = self.config
        await self.topology.prepare()  # may write the identity of a replacement node
        self.ident = load_or_create(cfg.node)
        self.node_id, self.dc = self.ident.node_id, self.ident.dc
        # dots of this run start above the floor of this start's incarnation (D19)
        self._dot_floor = incarnation.dot_floor(incarnation.begin(cfg.node.data_dir,
                                                                      self.clock.now()))
        self._restored = peer_store.load(cfg.node.data_dir, self.fs)  # the view before a restart
        grace = cfg.storage.gc_grace_seconds
        self.engine = self.repairer.track(Engine.open(  # every write noted for the kept Merkle trees
            os.path.join(cfg.node.data_dir, "engine"), cfg.storage, merge=versions.merge_bytes,
            purgeable=lambda data, now: versions.purgeable(data, now, grace), clock=self.clock,
            fs=self.fs, scheduler=self.scheduler))
        await self.handoff.open()
        try:
            self.server = self._server_factory(self.handle, cfg.node.host, cfg.node.port,
                                               cfg.limits.max_frame_bytes, secret=self.secret,
                                               ssl=self.tls_server,
                                               max_connections=cfg.limits.max_connections)
            if isinstance(self.server, RpcServer):
                self.server.eager = True  # see handle(): put/delete run without a Task
            await self.server.start()
        except OSError as exc:
            self.engine.close()
            self.engine = None
            raise Closed(f"cannot listen on {cfg.node.host}:{cfg.node.port}: "
                         f"{exc.strerror or exc}") from None
        self._start_membership()
        self.handoff.start()
        self.repairer.start()
        self.topology.start()
        return self

    async def close(self) -> None:
        """Stop serving and close the engine (its commit log is synced by close)."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self.server is not None:
            await self.server.close()
        await self.handoff.close()
        self.repairer.close()
        await self.topology.close()
        if self._peers_task is not None and not self._peers_task.done():
            await asyncio.gather(self._peers_task, return_exceptions=True)
        await self.rpc.close()
        if self.deadlines is not None:
            self.deadlines.close()
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await asyncio.get_running_loop().run_in_executor(None, engine.close)

    # ------------------------------------------------------------------ RPC entry

    def handle(self, method: str, body: dict, peer: str) -> Any:
        """The RpcServer handler: a dict (fast path) or an awaitable of one.

        The RPC server is eager (it drives a handler's coroutine without a Task): only the
        client writes (``put``/``delete``, the hot path) are handed over as coroutines;
        every other ``async`` handler still gets its own Task, as it always had."""
        fn = self._handlers.get(method)
        if fn is None:
            raise InvalidRequest(f"unknown method {method!r}")
        result = fn(body)
        if type(result) in COROUTINE_TYPES and method not in _EAGER_METHODS:
            return asyncio.ensure_future(result)
        return result

    def _rpc_get(self, body: dict) -> Any:
        """A dict when the read completed at once (R met locally), else a plain future:
        either way the transport needs no Task."""
        done = self._start_get(body.get("key"), body.get("r"))
        if done.done():
            return self._get_result(done.result())
        out = done.get_loop().create_future()
        done.add_done_callback(functools.partial(self._finish_get, out))
        return out

    async def _rpc_put(self, body: dict) -> dict:
        value = body.get("value")
        if value is None:
            raise InvalidRequest("put needs a value (bytes); use delete to remove a key")
        ctx = await self.put(body.get("key"), value, body.get("context"), body.get("w"),
                             body.get("ttl"), forwarded=bool(body.get("forwarded")))
        return {"context": ctx}

    async def _rpc_delete(self, body: dict) -> dict:
        await self.delete(body.get("key"), body.get("context"), body.get("w"),
                          forwarded=bool(body.get("forwarded")))
        return {}

    # ------------------------------------------------------------------ client operations

    async def get(self, key: object, level: object = None) -> tuple[list[bytes], bytes]:
        """Values and encoded context of ``key`` read at ``level`` (default read level)."""
        done = self._start_get(key, level)
        reply = self._get_result(done.result() if done.done() else await done)
        return reply["values"], reply["context"]

    def _start_get(self, key: object, level: object) -> asyncio.Future:
        """Start a coordinated read; the future gets its outcome."""
        self.counters["get"] += 1
        key = self._key(key)
        self._check_synced()
        lvl = co.parse_level(level, self.config.cluster.read_level)
        token = token_for(key)
        replicas = self.ring.replicas(token)
        req = self._requirement(lvl, replicas)
        full = self.rng.random() < self.config.cluster.full_read_chance
        targets = co.read_targets(req, replicas, self.membership.alive, self.node_id, full)
        skey = token.to_bytes(8, "big") + key
        if len(replicas) == 1 and targets == replicas and replicas[0] == self.node_id:
            # this node is the key's only replica: its engine's answer is the outcome (no
            # other reply to wait for, no timer, nobody to repair); errors take the ReadOp path
            try:
                value = self.engine.get(skey)
            except RingkvError:
                pass
            else:
                done = asyncio.get_running_loop().create_future()
                done.set_result(co.Success(1, value))
                return done
        return ops.ReadOp(self, req, skey, replicas, targets).done

    def _get_result(self, outcome: Any) -> dict:
        """The ``get`` reply for a read outcome; raises the failure."""
        if not isinstance(outcome, co.Success):
            raise self._failed(outcome)
        if outcome.value is None:
            return {"values": [], "context": EMPTY_CONTEXT}
        vs = versions.decode(outcome.value)
        return {"values": versions.values(vs),
                "context": versions.encode_context(vs[0], self._pack)}

    def _finish_get(self, out: asyncio.Future, done: asyncio.Future) -> None:
        try:
            out.set_result(self._get_result(done.result()))
        except RingkvError as exc:
            out.set_exception(exc)

    async def put(self, key: object, value: object, context: object = None,
                  level: object = None, ttl: object = None, *, forwarded: bool = False) -> bytes:
        """Write ``value`` (None = tombstone) superseding ``context``; the new context."""
        self.counters["put" if value is not None else "delete"] += 1
        key = self._key(key)
        self._check_synced()
        value = self._value(value) if value is not None else None
        ctx = _context(context)
        lvl = co.parse_level(level, self.config.cluster.write_level)
        if ttl is not None:  # a TTL on a merged version set has no agreed meaning yet
            raise InvalidRequest("ttl is not supported on replicated keys")
        token = token_for(key)
        replicas = self.ring.replicas(token)
        if self.node_id not in replicas:
            return await self._forward(key, value, context, level, ttl, replicas, forwarded)
        if len(replicas) == 1 and not self._view.moving:
            return await self._put_sole_replica(lvl, replicas, token.to_bytes(8, "big") + key,
                                                ctx, value)
        plan = self.handoff.plan(token, replicas)  # stand-ins for down replicas (sloppy)
        req = self._requirement(lvl, replicas, plan.counts)
        skey = token.to_bytes(8, "big") + key
        data, new = self._mint(skey, ctx, value)
        pending = self._pending(token) if self._view.moving else []  # joining/new owners
        if pending:  # W + P acks among current and pending replicas (docs/topology.md)
            req = self.topology.write_requirement(req, pending, plan.counts)
        q = co.WriteQuorum(req, plan.contacted(self.node_id) + pending)
        try:
            outcome = await ops.WriteOp(self, q, skey, data, plan.stand_in_of).run()
        finally:
            if self._minting.get(skey) is data:
                del self._minting[skey]
        self.handoff.after_write(plan, skey, data)
        if not isinstance(outcome, co.Success):
            raise self._failed(outcome)
        return versions.encode_context(new[0], self._pack)

    async def _put_sole_replica(self, lvl: co.Level, replicas: list[str], skey: bytes,
                                ctx: dict[str, int] | None, value: bytes | None) -> bytes:
        """``put`` when this node is the key's only replica (N=1) and no range is moving:
        mint, apply as a base, answer once durable. The general path's quorum, hint plan,
        replica sends and their timer have nothing to do here (measured: ~1/6 of a 1-node
        SET's CPU); the wait for durability keeps the request timeout."""
        self._requirement(lvl, replicas)  # Unavailable for a level one replica cannot meet
        data, new = self._mint(skey, ctx, value)
        try:
            durable = self.engine.aput_nowait(skey, data, base=True)  # base: see WriteOp
        finally:
            if self._minting.get(skey) is data:
                del self._minting[skey]
        if durable is not None:
            await self._bounded(durable)
        return versions.encode_context(new[0], self._pack)

    async def delete(self, key: object, context: object = None, level: object = None, *,
                     forwarded: bool = False) -> None:
        """Write a tombstone version superseding ``context``."""
        await self.put(key, None, context, level, forwarded=forwarded)

    # The node as the RESP front end sees it (ringkv.resp_commands.KvOps).
    kv_get, kv_put, kv_delete = get, put, delete

    def _sole_replica_token(self, key: object) -> int | None:
        """The token of ``key`` if it is non-empty bytes and this node is its only replica
        (the case the RESP batch paths below take), else None."""
        if type(key) is not bytes or not key:
            return None
        token = token_for(key)
        replicas = self.ring.replicas(token)
        return token if len(replicas) == 1 and replicas[0] == self.node_id else None

    def kv_get_many(self, keys: list[bytes], level: object) -> list[Any]:
        """``get``'s values for the plain GETs of one pipelined RESP group, each read at
        once where this node is the key's only replica (N=1): no future, and no context
        built (a RESP GET answers only values). Per key: the values, an exception (that
        get's error, as ``get`` would raise it) or None (not this case: the caller uses
        ``get``). Same checks, counters and errors as ``get``; what every key of the group
        shares (the level, the liveness check, the membership sync) is worked out once."""
        try:
            lvl = co.parse_level(level, self.config.cluster.read_level)
        except RingkvError:
            return [None] * len(keys)  # get() raises it for each
        me, counters = self.node_id, self.counters
        replicas = [me]  # every key read here has these replicas
        draw, chance = self.rng.random, self.config.cluster.full_read_chance
        checked = False  # the checks every key here shares (its replicas are [me]) passed
        out: list[Any] = []
        where: list[int] = []
        skeys: list[bytes] = []
        sole = self._sole_replica_token
        for key in keys:
            token = sole(key)
            if token is None:
                out.append(None)
                continue
            counters["get"] += 1
            try:
                key = self._key(key)
                if not checked:  # as get(): synced, level met, only this node to read
                    self._check_synced()
                    req = self._requirement(lvl, replicas)
                    full = draw() < chance  # as _start_get draws
                    if co.read_targets(req, replicas, self.membership.alive, me, full) != replicas:
                        counters["get"] -= 1  # get() counts it
                        out.append(None)
                        continue
                    checked = True
                else:
                    draw()  # every read draws once, as _start_get does
            except RingkvError as exc:
                out.append(exc)
                continue
            where.append(len(out))
            out.append(None)
            skeys.append(token.to_bytes(8, "big") + key)
        if not skeys:
            return out
        try:
            raws = self.engine.get_many(skeys)
        except RingkvError:  # get() takes the ReadOp path for these
            counters["get"] -= len(skeys)
            return out
        live_values = versions.live_values
        for i, raw in zip(where, raws):
            out[i] = live_values(raw) if raw is not None else []
        return out

    def kv_put_blind_many(self, items: list[tuple[bytes, bytes]],
                          level: object) -> tuple[list[Any], asyncio.Future | None]:
        """Context-less puts (the plain SETs of one pipelined RESP group), each applied at
        once where this node is the key's only replica (N=1) and no range is moving, with
        ONE durability wait for all of them instead of one future each.

        Returns ``(outcomes, durable)``: per item ``True`` (applied: done once ``durable``
        is, or now if it is None), an exception (that put failed, as ``put`` would have
        raised it) or ``False`` (not this case: the caller uses ``put``). ``durable`` fails
        with Timeout after the request timeout, as a single ``put`` does."""
        try:
            lvl = co.parse_level(level, self.config.cluster.write_level)
        except RingkvError:
            return [False] * len(items), None  # put() raises it for each
        out: list[Any] = []
        applied = False
        moving = self._view.moving
        replicas = [self.node_id]  # every key applied here has these replicas
        sole = self._sole_replica_token
        for key, value in items:
            token = None if type(value) is not bytes or moving else sole(key)
            if token is None:
                out.append(False)
                continue
            self.counters["put"] += 1
            try:  # the checks of put(), then _put_sole_replica's steps
                key = self._key(key)
                self._check_synced()
                value = self._value(value)
                self._requirement(lvl, replicas)
                skey = token.to_bytes(8, "big") + key
                data, _ = self._mint(skey, None, value)
                try:
                    self.engine.aput_nowait(skey, data, base=True, wait=False)
                finally:
                    if self._minting.get(skey) is data:
                        del self._minting[skey]
            except Exception as exc:  # noqa: BLE001 - that put's error is its reply
                out.append(exc)
                continue
            out.append(True)
            applied = True
        if not applied:
            return out, None
        durable = self.engine.durable_nowait()
        if durable is None:
            return out, None
        return out, self._bounded(durable)

    def _bounded(self, durable: asyncio.Future) -> asyncio.Future:
        """A future with ``durable``'s outcome, failed with Timeout if that takes longer
        than the request timeout. A future of our own: during a write stall the engine's
        is a Task, which cannot be failed from outside."""
        bounded = self._loop.create_future()
        timer = self._loop.call_later(self.timeout, _expire_local_write, bounded, self.timeout)
        durable.add_done_callback(functools.partial(_settle_bounded, bounded, timer))
        return bounded

    # ------------------------------------------------------------------ coordination steps

    def _handover_left(self) -> float:
        """Seconds the handover after a finished join still lasts here (0: none)."""
        if self._handover_ring is None:
            return 0.0
        return round(max(0.0, self._handover_until - self.clock.monotonic()), 1)

    def _pending(self, token: int) -> list[str]:
        """The pending replicas a write of ``token`` also goes to (W + P): future owners
        while a range moves, and for ``streaming.handover_s`` after a join finished the
        live nodes it took the range from (streaming.RingView.handover)."""
        view = self._view
        pending = view.pending(token)
        handover = view.handover(token)
        if handover:
            alive = self.alive
            pending = pending + [n for n in handover if alive(n)]
        return pending

    def _requirement(self, lvl: co.Level, replicas: list[str],
                     alive: Callable[[str], bool] | None = None) -> co.Requirement:
        """The requirement of ``lvl``; raises Unavailable if too few replicas are alive
        (per ``alive``, default membership; writes also count replicas with a stand-in)."""
        cache_key = (lvl, *replicas)
        req = self._reqs.get(cache_key)
        if req is None:
            if len(self._reqs) > 10_000:
                self._reqs.clear()
            req = self._reqs[cache_key] = co.requirement(lvl, replicas, self._dc_of,
                                                          self.replication, self.dc)
        unavailable = co.check_alive(req, alive or self.membership.alive)  # type: ignore[union-attr]
        if unavailable is not None:
            self.counters["unavailable"] += 1
            raise unavailable
        return req

    def _mint(self, skey: bytes, ctx: dict[str, int] | None, value: bytes | None) -> tuple[bytes, Any]:
        """Read the local set, mint the new version, register it: no await in between.

        A write without a context (``ctx`` None) supersedes every version this replica
        holds, like a read-modify-write done here: blind writers and context-less deletes
        do not pile up siblings. Versions only other replicas hold stay concurrent."""
        raw = ops.join_bytes(self.engine.get(skey), self._minting.get(skey))
        if raw is None:
            local = versions.EMPTY
        elif ctx is None:  # the new version supersedes every local sibling: only the vv counts
            ctx = versions.vv_of_stored(raw)
            local = versions.VersionSet(ctx, ())
        else:
            local = versions.decode(raw)
        if ctx is None:
            ctx = local[0]
        new = versions.update(local, ctx, self.node_id, value, self.clock.now(), self._dot_floor)
        if len(new[1]) > self.limits.max_siblings:
            raise Overloaded(f"key has {len(new[1])} siblings, over limits.max_siblings="
                             f"{self.limits.max_siblings}; resolve them with a put carrying "
                             "the context of a get")
        data = versions.encode(new, self._pack)
        self._minting[skey] = data
        return data, new

    async def _forward(self, key: bytes, value: bytes | None, context: object, level: object,
                       ttl: object, replicas: list[str], forwarded: bool) -> bytes:
        """A non-replica hands a write to a replica, which mints the dot."""
        if forwarded:
            raise Unavailable(1, 0, "forwarded write reached a non-replica (ring views differ)")
        target = co.forward_target(replicas, self.alive, self._dc_of, self.dc)
        if target is None:
            raise Unavailable(len(replicas), 0, "no live replica to forward the write to")
        self.counters["forwarded"] += 1
        host, port = self._addr[target]
        if value is None:
            body = {"key": key, "context": context, "w": level, "forwarded": True}
            await self.rpc.call(host, port, "delete", body, self.timeout * 2)
            return b""
        body = {"key": key, "value": value, "context": context, "w": level, "ttl": ttl,
                "forwarded": True}
        reply = await self.rpc.call(host, port, "put", body, self.timeout * 2)
        return reply.get("context", b"")

    def _request(self, node: str, method: str, body: dict) -> asyncio.Future:
        """One RPC to a peer, as a future (fails with Timeout after ``self.timeout``)."""
        host, port = self._addr[node]
        return ops.request(self.rpc, host, port, method, body, self.timeout)

    def _repair(self, node: str, skey: bytes, merged: bytes) -> None:
        """Write the joined version set to a stale replica (read repair), in the background."""
        self.counters["read_repairs"] += 1
        if node == self.node_id:
            fut = asyncio.ensure_future(self.engine.aput(skey, merged))
        else:
            fut = self._request(node, "replica_put", {"skey": skey, "vs": merged})
        fut.add_done_callback(_log_repair_failure)

    def _failed(self, outcome: Any) -> RingkvError:
        if isinstance(outcome, RingkvError):
            self.counters["timeouts" if type(outcome).__name__ == "Timeout" else "errors"] += 1
            return outcome
        return RingkvError(f"unexpected outcome {outcome!r}")

    # ------------------------------------------------------------------ argument checks

    def _key(self, key: object) -> bytes:
        if type(key) is str:
            key = key.encode()
        if type(key) is not bytes or not key:
            raise InvalidRequest("key must be non-empty bytes")
        if len(key) > self.limits.max_key_bytes:
            raise TooLarge("key", len(key), self.limits.max_key_bytes)
        return key

    def _value(self, value: object) -> bytes:
        if type(value) is str:
            value = value.encode()
        if type(value) is not bytes:
            raise InvalidRequest("value must be bytes")
        if len(value) > self.limits.max_value_bytes:
            raise TooLarge("value", len(value), self.limits.max_value_bytes)
        return value

    # ------------------------------------------------------------------ introspection

    def ring_info(self) -> dict:
        """The ``ring`` RPC reply: every token owner with its state, and the replication."""
        m = self.membership
        nodes = [{"node_id": n.node_id, "host": n.host, "port": n.port, "http_port": n.http_port,
                  "dc": n.dc, "rack": n.rack, "tokens": list(n.tokens),
                  "state": (m.state_of(n.node_id) if m else None) or "unknown",
                  "published": n.state}  # joining/normal/leaving even while down
                 for n in self._view.owners]
        return {"nodes": nodes, "replication": dict(self.replication)}

    def status(self) -> dict:
        """The ``status`` RPC reply: identity, state, load, key estimate, ownership, counters."""
        node = self.config.node
        stats = _engine_stats(self.engine)
        keys = int(stats.get("sstable_entries", 0))  # estimate: flushed entries, memtable not counted
        return {"node_id": self.node_id, "state": self.membership.state_of(self.node_id)
                if self.membership else "starting",
                "host": node.host, "port": self.server.port if self.server else node.port,
                "http_port": node.effective_http_port(), "resp_port": self.resp_port,
                "dc": self.dc,
                "rack": self.ident.rack if self.ident else "", "load": _disk_bytes(node.data_dir),
                "keys": keys, "ownership": self.ring.ownership().get(self.node_id, 0.0)
                if self.ring.tokens else 0.0,
                "tokens": len(self.ident.tokens) if self.ident else 0,
                "alive": [n for n in sorted(self._addr) if self.alive(n)],
                "counters": dict(self.counters, auth_refusals=getattr(self.server, "auth_refusals", 0),
                                 rejected_connections=getattr(self.server, "rejected_connections", 0)),
                "connections": getattr(self.server, "connections", 0),
                "engine": stats, "authenticated": self.secret is not None,
                "tls": self.tls_server is not None,
                "started_ms": self.started_ms,
                "handover_s": self._handover_left(), "left_ring": self.left_ring,
                "hints": self.handoff.status(), "streaming": self.topology.summary(),
                "repair_trees": self.repairer.store.view()}


def _context(context: object) -> dict[str, int] | None:
    """The client's context; None when it sent none (a blind write, see ``_mint``)."""
    if context is None or context == b"":
        return None
    if type(context) is not bytes:
        raise InvalidRequest("context must be bytes (the opaque token from a get)")
    return versions.decode_context(context)


def _engine_stats(engine: Any) -> dict:
    try:
        stats = engine.stats() if engine is not None else {}
    except Exception:  # noqa: BLE001 - status must answer even if stats fail
        return {}
    return {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))}


def _disk_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _settle_bounded(out: asyncio.Future, timer: asyncio.TimerHandle,
                    durable: asyncio.Future) -> None:
    """``out`` (failed by ``timer`` if it fires first) gets ``durable``'s outcome."""
    timer.cancel()
    if out.done():
        return
    if durable.cancelled():
        out.cancel()
    elif durable.exception() is not None:
        out.set_exception(durable.exception())  # type: ignore[arg-type]
    else:
        out.set_result(None)


def _expire_local_write(durable: asyncio.Future, timeout: float) -> None:
    """A sole replica's write not durable within the request timeout: fail the put."""
    if not durable.done():
        durable.set_exception(Timeout(1, 0, f"local write not durable in {timeout:g}s"))


def _log_repair_failure(fut: asyncio.Future) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.info("read repair write failed: %s", fut.exception())


__all__ = ["Node", "COUNTERS"]
