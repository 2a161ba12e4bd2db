"""The membership side of a node: gossip ticks and messages, the ring view, peers.json.

A mixin of :class:`ringkv.node.Node`, kept apart so the node's file holds coordination.
The decisions are in the pure :mod:`ringkv.membership` (gossip state, failure detection)
and :mod:`ringkv.streaming` (ring views with pending owners); this shell feeds them the
clock and gossip messages, performs their effects (sends, state changes) and rebuilds the
node's ring, addresses and data centers when the token owners change.
Uses the node's ``config``, ``clock``, ``rng``, ``rpc``, ``counters``, ``server``,
``ident``, ``topology``, ``replication``, ``fs`` and ``_loop``; sets ``membership``,
``ring``, ``_view``, ``_addr``, ``_dc_of``, ``_reqs``, ``_tick_handle`` and ``_auth_warned``.
Invariant: at most one write of data_dir/peers.json runs at a time, and the last change
is always written (docs/decisions.md D17).
"""

from __future__ import annotations

import asyncio
import functools
import logging

from ringkv import peer_store
from ringkv.errors import AuthenticationFailed, ConfigError, InvalidRequest, RingkvError, Unavailable
from ringkv.membership import IdentityClaimed, Member, Membership, Send, StateChanged
from ringkv.streaming import RingView, join_finished, owner_of

log = logging.getLogger("ringkv.node")
AUTH_WARN_EVERY_S = 60.0  # a peer refusing our gossip for a wrong secret is logged this often


class GossipShell:
    """Gossip, failure detection and the ring view of one node (mixin of Node)."""

    def _start_membership(self) -> None:
        assert self.ident is not None and self.server is not None
        node = self.config.node
        me = Member(self.ident.node_id, host=node.host, port=self.server.port,
                    http_port=node.effective_http_port(), dc=self.ident.dc, rack=self.ident.rack,
                    tokens=self.ident.tokens, state=self.topology.initial_state(),
                    generation=int(self.clock.now() * 1000))
        self.started_ms = me.generation  # this life's own generation (absorbing may raise it)
        self.membership = Membership(me, self.rng, self.membership_config)
        for seed in node.seeds:
            host, _, port = seed.rpartition(":")
            if port.isdigit() and (host, int(port)) != (node.host, self.server.port):
                self.membership.add_seed(host or "127.0.0.1", int(port))
        # The view persisted before a restart: states, tokens, generations (down until heard).
        self.membership.restore(self._restored, self.clock.monotonic())
        self._peers_sig = self._peer_records_sig()
        self._refresh_ring()
        self._on_tick()

    def _on_tick(self) -> None:
        assert self.membership is not None and self._loop is not None
        try:
            self._perform(self.membership.tick(self.clock.monotonic()))
            self._refresh_ring()
        except Exception:  # noqa: BLE001 - the gossip timer must keep running
            log.exception("gossip tick failed")
        self._tick_handle = self._loop.call_later(
            self.membership_config.gossip_interval_s, self._on_tick)

    def _perform(self, effects: list) -> None:
        changed = False
        for eff in effects:
            if isinstance(eff, Send):
                self._gossip_send(eff)
            elif isinstance(eff, StateChanged):
                log.info("node %s: %s -> %s", eff.node_id, eff.old or "(new)", eff.new)
                changed = True
            elif isinstance(eff, IdentityClaimed):
                asyncio.ensure_future(self._check_identity_claim(eff.host, eff.port))
        if changed:
            self._refresh_ring()
            self._persist_peers()

    def _gossip_send(self, eff: Send) -> None:
        self.counters["gossip_out"] += 1
        task = asyncio.ensure_future(self.rpc.call(
            eff.host, eff.port, "gossip", {"kind": eff.kind, "body": eff.body}, timeout=1.0))
        task.add_done_callback(functools.partial(self._gossip_sent, eff))

    def _gossip_sent(self, eff: Send, task: asyncio.Future) -> None:
        if task.cancelled() or task.exception() is None or self.membership is None:
            return
        exc = task.exception()
        now = self.clock.monotonic()
        if isinstance(exc, AuthenticationFailed):  # secret or TLS mismatch: say so, once a minute
            peer = f"{eff.node_id or 'seed'} ({eff.host}:{eff.port})"
            if now >= self._auth_warned.get(peer, 0.0):
                self._auth_warned[peer] = now + AUTH_WARN_EVERY_S
                log.warning("gossip to %s refused: AuthenticationFailed: %s (do both nodes have "
                            "the same cluster secret and TLS CA?)", peer, exc)
        self._perform(self.membership.on_unreachable(eff.node_id, now))

    async def _check_identity_claim(self, host: str, port: int) -> None:
        """Gossip carried a record of our node id at ``host:port`` (D38). Ask that address
        who it is: a process there with our id is running from a copy of our data
        directory, and two minters of one id's dots lose writes (a write by either can
        supersede the other's concurrent one). The one started later stops; the other
        logs it. No answer, or another id: a life of ours from before an address change."""
        try:
            reply = await self.rpc.call(host, port, "status", {}, timeout=2.0)
        except RingkvError:
            return
        if reply.get("node_id") != self.node_id:
            return
        theirs = reply.get("started_ms")
        if not isinstance(theirs, int):
            theirs = -1  # an older build: it does not say; assume it started first
        me = (self.config.node.host, self.server.port if self.server else self.config.node.port)
        if (self.started_ms, me) > (theirs, (host, port)):  # we started later: we are the copy
            self.fatal_error = ConfigError(
                "node.data_dir", f"node id {self.node_id!r} is already in use by the node at "
                f"{host}:{port}, which started earlier: {self.config.node.data_dir} is a copy "
                "of its data directory (a cloned machine or disk?). This node stopped before "
                "either lost writes; give it a data directory of its own (an empty one and "
                "`ringkv join` make it a new node)")
            log.critical("%s", self.fatal_error)
            if self.fatal is not None:
                self.fatal.set()
        else:
            log.error("node id %r is also used by the process at %s:%d, started later from a "
                      "copy of this node's data directory; it stops itself", self.node_id,
                      host, port)

    def _rpc_gossip(self, body: dict) -> dict:
        assert self.membership is not None
        kind, inner = body.get("kind"), body.get("body")
        if not isinstance(kind, str) or not isinstance(inner, dict):
            raise InvalidRequest("gossip needs kind (str) and body (map)")
        self.counters["gossip_in"] += 1
        self._perform(self.membership.on_message(kind, inner, self.clock.monotonic()))
        return {}

    def _refresh_ring(self) -> None:
        """Rebuild the ring when the token owners or their addresses changed."""
        assert self.membership is not None
        members = self.membership.ring_members()
        sig = tuple((m.node_id, m.host, m.port, m.http_port, m.dc, m.rack, m.tokens, m.state,
                     m.generation) for m in members)
        now = self.clock.monotonic()
        expired = self._handover_ring is not None and now >= self._handover_until
        if sig == self._ring_sig and not expired:
            return
        if expired:
            self._handover_ring = None
        # reads use normal + leaving nodes; joining ones only get writes (streaming.RingView)
        view = RingView([owner_of(m) for m in members], self.replication, self._handover_ring)
        handover_s = self.config.streaming.handover_s
        if handover_s > 0 and join_finished(self._view, view):
            # Coordinators that have not heard yet that the join finished read the old
            # replica set, so for a while our writes go to the nodes the new one took
            # ranges from too (streaming.RingView.handover; docs/topology.md).
            old = self._view.read_ring
            self._handover_ring, self._handover_until = old, now + handover_s
            view = RingView([owner_of(m) for m in members], self.replication, old)
        self._view = view
        self.ring = self._view.read_ring
        self._addr = {m.node_id: (m.host, m.port) for m in members}
        self._dc_of = {m.node_id: m.dc for m in members}
        self._reqs = {}
        self._ring_sig = sig
        self._persist_peers()

    def _peer_records_sig(self) -> tuple:
        assert self.membership is not None
        return tuple((m.node_id, m.generation, m.state, m.tokens, m.host, m.port, m.http_port,
                      m.dc, m.rack) for m in self.membership.records())

    def _persist_peers(self) -> None:
        """Write data_dir/peers.json (in the background, one write at a time) when a
        peer's state, tokens, address or generation changed (docs/decisions.md D17)."""
        sig = self._peer_records_sig()
        if sig == self._peers_sig:
            return
        self._peers_sig = sig
        self._peers_dirty = True
        if self._peers_task is None or self._peers_task.done():
            self._peers_task = asyncio.ensure_future(self._write_peers())

    async def _write_peers(self) -> None:
        loop = asyncio.get_running_loop()
        while self._peers_dirty and self.membership is not None:
            self._peers_dirty = False
            records = self.membership.records()
            try:
                await loop.run_in_executor(None, peer_store.save, self.config.node.data_dir,
                                           records, self.fs)
            except OSError as exc:
                self._peers_sig = ()  # the next change tries again
                log.warning("cannot persist the membership view: %s", exc)

    def _check_synced(self) -> None:
        """Coordinate nothing before the first gossip digest since start (docs/decisions.md D17)."""
        if self.membership is None or not self.membership.synced:
            self.counters["unavailable"] += 1
            raise Unavailable(1, 0, f"node {self.node_id or '?'} has not heard the cluster's "
                                    "membership since it started; retry")

    def alive(self, node_id: str) -> bool:
        assert self.membership is not None
        return self.membership.alive(node_id)


__all__ = ["GossipShell"]
