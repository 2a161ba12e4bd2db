"""Gossip membership and failure detection: a pure state machine (no IO, no clock).

What it is. Each node keeps a membership list: for every node one ``Member`` record
(node id, generation, heartbeat, published state, tokens, dc, rack, addresses) plus, for
peers, a local estimate ``last_seen`` of when the peer was last known to be alive. Every
``tick(now)`` bumps our own heartbeat and gossips the list to ``fanout`` random live peers,
push-pull in up to three legs as Cassandra does: ``gossip`` (compact digest: id,
generation, heartbeat, state, age, down), ``gossip_ack`` (the receiver's digest, the full
records the sender lacks, the ids it lacks itself) and ``gossip_full`` (those records).
Tokens and addresses never change within a generation, so they travel only to nodes
that lack them. Lists merge record by record, newest version wins. A peer whose
liveness evidence is older than ``suspect_after_s`` is *suspected*: we ping it and ask
``probe_count`` other members to ping it for us (SWIM's indirect probe). It is declared
*down* only when ``min_agreeing`` nodes (us included) agree that it is stale, so one bad
link cannot take a healthy node down. The record, its order and its wire encoding live in
ringkv/membership_record.py; docs/membership.md explains the choices and holds the
measured detection times and false-positive rates.

Invariants.
- Pure: the caller passes ``now`` (seconds, any monotonic origin) and a seeded
  ``random.Random``; every output is a list of effects (``Send``, ``StateChanged``) that
  ``node.py`` performs. Same inputs and seed, same outputs: we never iterate a set, and
  dicts are walked in sorted key order.
- Record order: ``Member.version() = (generation, removed, heartbeat)``. Only the node
  itself raises its heartbeat; a restart raises its generation, so a restarted node's
  records beat everything it published before. ``removed`` is terminal within a
  generation (``remove_node`` of a dead peer must win over its last heartbeats). Merging is
  therefore a join: commutative, associative, idempotent.
- ``down`` is never published by a node about itself: it is a local verdict of the failure
  detector, overlaid on the published state by ``state_of``/``members``. It is gossiped as
  an opinion (the entry's ``down`` flag) that counts as one agreeing node.
- Liveness travels as *age*: each gossiped entry says how long ago the sender last had
  evidence the node was alive. The receiver keeps ``last_seen = max(last_seen, now - age)``,
  so stale news relayed late never looks fresh (a dead node cannot be revived by a slow
  relay). A down peer comes back only on evidence of life newer than the moment we
  declared it down (a restarted node gives that at once). Network delay makes ages slightly too young; the drift
  is one network delay per hop, negligible against ``suspect_after_s``.
- All bodies are dicts of str/int/float/bool/None/lists: msgpack-serialisable.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol, Sequence, TypeVar, Union

from ringkv.config import MembershipConfig
from ringkv.membership_record import (DOWN, JOINING, KINDS, LEAVING, NORMAL, PUBLISHED_STATES,
                                      REMOVED, RING_STATES, STATES, Entry, Member, encode_entry,
                                      parse_message)

T = TypeVar("T")


class Rng(Protocol):
    """What we use of a seeded ``random.Random`` (this module never imports random)."""

    def random(self) -> float: ...

    def sample(self, population: Sequence[T], k: int) -> list[T]: ...

    def choice(self, seq: Sequence[T]) -> T: ...



@dataclass(frozen=True)
class Send:
    """Effect: send a one-way message ``kind`` with ``body`` to a node.

    ``node_id`` is None for a seed known only by address. ``kind`` is one of ``KINDS``;
    every message is one-way (an answer is a new Send back), so node.py may deliver it as
    an RPC whose reply it ignores, and feeds what arrives to ``on_message(kind, body,
    now)``. If the send fails (connection refused, timeout), node.py calls
    ``Membership.on_unreachable(node_id, now)``; a lost message needs no report.
    """

    node_id: str | None
    host: str
    port: int
    kind: str
    body: dict[str, Any]


@dataclass(frozen=True)
class StateChanged:
    """Effect: a node's effective state changed in our view (``old`` is "" for a new node)."""

    node_id: str
    old: str
    new: str


@dataclass(frozen=True)
class IdentityClaimed:
    """Effect: a full record of *our* node id at another address reached us: another
    process runs with our identity (a copy of our data directory, e.g. a cloned machine),
    or it is a life of ours from before an address change. node.py finds out which by
    asking that address (docs/decisions.md D38); raised once per address."""

    host: str
    port: int


Effect = Union[Send, StateChanged, IdentityClaimed]


@dataclass
class _Peer:
    """Our local, mutable view of one peer."""

    member: Member
    last_seen: float  # local time of the newest evidence that the peer was alive
    suspect_since: float | None = None
    down_since: float | None = None
    last_probe: float = float("-inf")
    confirmers: dict[str, float] = field(default_factory=dict)  # node id -> when it agreed
    restored: bool = False  # known only from our own disk (restore), not yet heard of since


class Membership:
    """The membership list and failure detector of one node. See the module docstring."""

    def __init__(self, self_info: Member, rng: Rng,
                 config: MembershipConfig | None = None) -> None:
        self._config = (config or MembershipConfig()).validate()
        if self_info.state not in PUBLISHED_STATES:
            raise ValueError(f"bad initial state {self_info.state!r}")
        self._self = self_info
        self._rng = rng
        self._peers: dict[str, _Peer] = {}
        self._seeds: list[tuple[str, int]] = []
        self._synced = False  # merged a peer's gossip digest since we started
        self._claims: set[tuple[str, int]] = set()  # other addresses seen with our node id
        # Counters for metrics and the simulator's checks; only ever incremented.
        self.counters = {"suspected": 0, "declared_down": 0, "revived": 0, "probes": 0}

    # ----- queries -------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._self.node_id

    @property
    def self_member(self) -> Member:
        return self._self

    @property
    def config(self) -> MembershipConfig:
        return self._config

    def state_of(self, node_id: str) -> str | None:
        """Effective state: the published one, or DOWN when our detector says so."""
        if node_id == self.node_id:
            return self._self.state
        peer = self._peers.get(node_id)
        return None if peer is None else _effective(peer)

    def alive(self, node_id: str) -> bool:
        """True for ourselves and for known peers that are neither down nor removed."""
        # state_of(node_id) in RING_STATES, inlined: the coordinator asks this per replica
        # of every request
        me = self._self
        if node_id == me.node_id:
            return me.state in RING_STATES
        peer = self._peers.get(node_id)
        return peer is not None and _effective(peer) in RING_STATES

    def suspected(self, node_id: str) -> bool:
        """True while a peer is stale but not (yet) agreed to be down."""
        peer = self._peers.get(node_id)
        return peer is not None and peer.suspect_since is not None and peer.down_since is None

    def member(self, node_id: str) -> Member | None:
        """The record of one node with its effective state, or None if unknown."""
        if node_id == self.node_id:
            return self._self
        peer = self._peers.get(node_id)
        if peer is None:
            return None
        state = _effective(peer)
        return peer.member if state == peer.member.state else replace(peer.member, state=state)

    def members(self) -> list[Member]:
        """Every known node (ourselves included), by id, with effective states."""
        ids = sorted([self.node_id, *self._peers])
        return [m for m in (self.member(i) for i in ids) if m is not None]

    def live_members(self) -> list[Member]:
        """Members in joining/normal/leaving that are not down, by id."""
        return [m for m in self.members() if m.state in RING_STATES]

    def ring_members(self) -> list[Member]:
        """Token owners as published (joining/normal/leaving), down ones included, by id.

        A down node keeps its tokens: temporary failures are handled by sloppy quorum,
        not by moving data. Only a removed node leaves the ring.
        """
        records = [self._self] + [self._peers[i].member for i in sorted(self._peers)]
        return sorted((m for m in records if m.state in RING_STATES), key=lambda m: m.node_id)

    def records(self) -> list[Member]:
        """Every peer's record as published (removed ones too, no down overlay), by id:
        what node.py persists so that a restart remembers the ring (``restore``)."""
        return [self._peers[i].member for i in sorted(self._peers)]

    @property
    def synced(self) -> bool:
        """True once this node has merged a peer's gossip digest since it started (or
        has no one to learn from: no peer known and no seed). Before that its view may
        miss membership changes made while it was down; node.py coordinates nothing."""
        return self._synced or (not self._peers and not self._seeds)

    # ----- commands ------------------------------------------------------------------

    def add_seed(self, host: str, port: int) -> None:
        """Gossip to this address every tick until we know a member that lives there."""
        if (host, port) not in self._seeds:
            self._seeds.append((host, port))

    def restore(self, records: Sequence[Member], now: float) -> list[Effect]:
        """Install peer records this node persisted before it stopped (``records()``).

        A restored record is not evidence of life: the peer starts *down*, as if declared
        down at ``now``, and comes back only on evidence newer than that (as any down
        peer), so nothing is sent to it as a replica before it is heard of again. Its
        published state, tokens and generation count at once: a leaving or removed node
        stays so in the ring view, and newer gossip replaces the record as usual. Until some
        message mentions a restored peer, its address is gossiped to like an unknown seed's.
        Records of ourselves and of peers already known are ignored."""
        effects: list[Effect] = []
        for record in sorted(records, key=lambda m: m.node_id):
            if record.node_id == self.node_id or record.node_id in self._peers:
                continue
            if record.state not in PUBLISHED_STATES:
                raise ValueError(f"bad restored state {record.state!r}")
            peer = _Peer(record, last_seen=float("-inf"), down_since=now, restored=True)
            self._peers[record.node_id] = peer
            effects.append(StateChanged(record.node_id, "", _effective(peer)))
        return effects

    def set_state(self, state: str) -> list[Effect]:
        """Publish a new state for ourselves (normal after joining, leaving, removed)."""
        if state not in PUBLISHED_STATES:
            raise ValueError(f"cannot publish state {state!r}")
        old = self._self.state
        self._self = replace(self._self, state=state, heartbeat=self._self.heartbeat + 1)
        return [StateChanged(self.node_id, old, state)] if old != state else []

    def remove_node(self, node_id: str) -> list[Effect]:
        """Mark a (dead) peer removed, as ``removenode`` does; wins within its generation."""
        peer = self._peers.get(node_id)
        if peer is None or peer.member.state == REMOVED:
            return []
        old = _effective(peer)
        peer.member = replace(peer.member, state=REMOVED)
        return [StateChanged(node_id, old, REMOVED)]

    def tick(self, now: float) -> list[Effect]:
        """Advance one gossip round: heartbeat, failure detection, gossip."""
        self._self = replace(self._self, heartbeat=self._self.heartbeat + 1)
        effects = self._detect(now)
        return effects + self._gossip(now)

    def on_unreachable(self, node_id: str | None, now: float) -> list[Effect]:
        """A send to ``node_id`` failed. Evidence, not proof: ask others to probe it."""
        peer = self._peers.get(node_id) if node_id else None
        if peer is None or _effective(peer) not in RING_STATES:
            return []
        if now - peer.last_probe < self._config.probe_interval_s:
            return []
        return self._probe(peer, now, direct=False)

    def on_message(self, kind: str, body: dict[str, Any], now: float) -> list[Effect]:
        """Handle one message from a peer; raise ProtocolError if it is malformed.

        The whole message is parsed before any of it is applied, so a bad one changes
        nothing.
        """
        sender, entries = parse_message(kind, body)
        if sender.member.node_id == self.node_id:
            # our own message came back (e.g. a seed address that is us), or another
            # process that has our node id talks to us
            return self._claim(sender.member)
        sender_id = sender.member.node_id
        want: list[str] = []  # nodes the sender has a newer life of than we know in full
        other = self._other_address_of(sender.member, now)
        effects = self._merge(sender_id, sender, now, want)
        if other is not None:  # show the sender the record of its id we held (D38)
            effects.append(Send(sender_id, sender.member.host, sender.member.port, "gossip_full",
                                {"from": self._entry_self(), "members": [other]}))
        for entry in entries:
            effects += self._merge(sender_id, entry, now, want)
        if not want and kind in ("gossip", "gossip_ack", "gossip_full"):
            self._synced = True  # a whole digest merged, nothing left to ask for
        return effects + _HANDLERS[kind](self, sender_id, body, now, want)

    # ----- message handlers (bodies already validated by parse_message) -----------------

    def _on_gossip(self, sender: str, body: dict[str, Any], now: float,
                   want: list[str]) -> list[Effect]:
        """Pull half of push-pull: our digest, the full records the sender lacks, and
        the ids we lack (the sender answers with ``gossip_full``)."""
        reply = self._digest(now, exclude=sender)
        has = {e["id"]: e["gen"] for e in body["members"]}
        lacking = [i for i, p in sorted(self._peers.items())
                   if i != sender and has.get(i, -1) < p.member.generation]
        reply["full"] = [self._entry_of(i, now) for i in lacking]
        reply["want"] = want
        return self._send(sender, "gossip_ack", reply)

    def _on_gossip_ack(self, sender: str, body: dict[str, Any], now: float,
                       want: list[str]) -> list[Effect]:
        """Third leg: send the full records the peer asked for."""
        wanted = [i for i in body.get("want") or [] if i == self.node_id or i in self._peers]
        if not wanted:
            return []
        full = [self._entry_of(i, now) for i in sorted(set(wanted))]
        return self._send(sender, "gossip_full", {"from": self._entry_self(), "members": full})

    def _on_merge_only(self, sender: str, body: dict[str, Any], now: float,
                       want: list[str]) -> list[Effect]:
        return []  # gossip_full, probe_ack: their entries were merged by on_message

    def _on_ping(self, sender: str, body: dict[str, Any], now: float,
                 want: list[str]) -> list[Effect]:
        reply = {"from": self._entry_self(), "origin": body.get("origin")}
        return self._send(sender, "ping_ack", reply)

    def _on_ping_ack(self, sender: str, body: dict[str, Any], now: float,
                     want: list[str]) -> list[Effect]:
        """The pinged peer answered; if we pinged on someone's behalf, tell them."""
        origin = body.get("origin")
        if origin is None or origin == self.node_id:
            return []
        return self._send(origin, "probe_ack", self._probe_ack_body(sender, now))

    def _on_probe_req(self, sender: str, body: dict[str, Any], now: float,
                      want: list[str]) -> list[Effect]:
        """Answer at once with our view of the target, and ping it for the requester."""
        target = body["target"]
        effects = self._send(sender, "probe_ack", self._probe_ack_body(target, now))
        if target != self.node_id and self.state_of(target) in RING_STATES + (DOWN,):
            effects += self._send(target, "ping", {"from": self._entry_self(), "origin": sender})
        return effects

    # ----- merging and failure detection ---------------------------------------------

    def _merge(self, sender: str, entry: Entry, now: float, want: list[str]) -> list[Effect]:
        """Merge one decoded entry from ``sender``; return StateChanged effects.

        A compact entry (no tokens/addresses) of a generation we do not hold in full
        cannot be applied: its id goes to ``want`` and the sender sends it in full.
        """
        incoming, age, flagged_down, full = entry
        if incoming.node_id == self.node_id:
            # a newer record of us at another address is still absorbed (our address
            # stays): the cluster must go on routing our id here, not to the other one
            return (self._claim(incoming) if full else []) + self._absorb_self(incoming)
        seen = now - age
        peer = self._peers.get(incoming.node_id)
        if not full:
            if peer is None or incoming.generation > peer.member.generation:
                want.append(incoming.node_id)
                return []
            # Within a generation the static fields never change: take ours.
            known = peer.member
            if (known.generation, known.heartbeat, known.state) == \
                    (incoming.generation, incoming.heartbeat, incoming.state):
                incoming = known  # the common case: saves a copy per entry per message
            else:  # replace(known, generation=..., heartbeat=..., state=...), ~4x cheaper
                incoming = Member(known.node_id, known.host, known.port, known.http_port,
                                  known.dc, known.rack, known.tokens, incoming.state,
                                  incoming.generation, incoming.heartbeat)
        if peer is None:
            peer = self._peers[incoming.node_id] = _Peer(incoming, last_seen=seen)
            old = ""
        else:
            old = _effective(peer)
            self._update_record(peer, incoming, seen)
            peer.restored = False  # the cluster knows it: an ordinary (down) peer now
        # The sender agrees the peer is stale if it flags it down or has no fresh evidence.
        if sender != incoming.node_id and (flagged_down or age >= self._config.suspect_after_s):
            peer.confirmers.setdefault(sender, now)
        self._maybe_declare(peer, now)
        new = _effective(peer)
        return [StateChanged(incoming.node_id, old, new)] if old != new else []

    def _update_record(self, peer: _Peer, incoming: Member, seen: float) -> None:
        """Take a newer record and fresher liveness evidence; revive on real news."""
        if incoming is not peer.member:  # (the common case, from _merge: nothing to compare)
            if incoming.version() < peer.member.version():
                return  # an older record: its liveness evidence is about an older life
            if incoming.order_key() > peer.member.order_key():
                peer.member = incoming
        if seen <= peer.last_seen:
            return
        peer.last_seen = seen
        peer.confirmers.clear()  # their agreement was about older evidence
        peer.suspect_since = None
        if peer.down_since is not None and seen > peer.down_since:
            peer.down_since = None  # alive after we declared it down: it is back
            self.counters["revived"] += 1

    def _other_address_of(self, sender: Member, now: float) -> dict[str, Any] | None:
        """Our full entry of ``sender``'s id if it names another address than the sender
        publishes, else None. Gossip leaves a node's own record out of what it sends that
        node, so without this two processes with one id, each talking only to third
        nodes, would never see each other's record: only bump generations over it."""
        peer = self._peers.get(sender.node_id)
        if peer is None or (peer.member.host, peer.member.port) == (sender.host, sender.port):
            return None
        return self._entry_of(sender.node_id, now)

    def _claim(self, record: Member) -> list[Effect]:
        """IdentityClaimed for a record of our id at an address that is not ours (once)."""
        where = (record.host, record.port)
        if where == (self._self.host, self._self.port) or where in self._claims:
            return []
        self._claims.add(where)
        return [IdentityClaimed(record.host, record.port)]

    def _absorb_self(self, incoming: Member) -> list[Effect]:
        """Someone holds a newer record of us (restart with a stale generation, or removenode)."""
        if incoming.version() <= self._self.version():
            return []
        old = self._self.state
        self._self = replace(self._self, generation=incoming.generation,
                             heartbeat=incoming.heartbeat + 1, state=incoming.state)
        return [StateChanged(self.node_id, old, incoming.state)] if old != incoming.state else []

    def _maybe_declare(self, peer: _Peer, now: float) -> bool:
        """Declare a stale peer down once enough nodes agree; True if it was declared now."""
        if peer.down_since is not None or peer.member.state not in RING_STATES:
            return False
        if now - peer.last_seen < self._config.suspect_after_s:
            return False
        if 1 + len(peer.confirmers) < self._config.min_agreeing:
            return False
        peer.down_since = now
        self.counters["declared_down"] += 1
        return True

    def _detect(self, now: float) -> list[Effect]:
        """Suspect stale peers, declare agreed ones down, probe the rest."""
        effects: list[Effect] = []
        for node_id in sorted(self._peers):
            peer = self._peers[node_id]
            if peer.down_since is not None or peer.member.state not in RING_STATES:
                continue
            if now - peer.last_seen < self._config.suspect_after_s:
                peer.suspect_since = None
                continue
            if peer.suspect_since is None:
                peer.suspect_since = now
                self.counters["suspected"] += 1
            old = _effective(peer)
            if self._maybe_declare(peer, now):
                effects.append(StateChanged(node_id, old, DOWN))
            elif now - peer.last_probe >= self._config.probe_interval_s:
                effects += self._probe(peer, now, direct=True)
        return effects

    def _probe(self, peer: _Peer, now: float, direct: bool) -> list[Effect]:
        """Ping ``peer`` (if ``direct``) and ask ``probe_count`` other live members to."""
        target = peer.member.node_id
        peer.last_probe = now
        self.counters["probes"] += 1
        effects: list[Effect] = []
        if direct:
            effects += self._send(target, "ping", {"from": self._entry_self(), "origin": None})
        helpers = [m.node_id for m in self.live_members() if m.node_id not in (self.node_id, target)]
        chosen = self._rng.sample(helpers, min(self._config.probe_count, len(helpers)))
        body = {"from": self._entry_self(), "target": target}
        for helper in chosen:
            effects += self._send(helper, "probe_req", body)
        return effects

    # ----- gossip --------------------------------------------------------------------

    def _gossip(self, now: float) -> list[Effect]:
        """Push-pull our list to random live peers, maybe one down peer, and unknown seeds."""
        digest = self._digest(now)
        effects: list[Effect] = []
        for node_id in self._gossip_targets():
            effects += self._send(node_id, "gossip", digest)
        for host, port in self._unknown_seeds():
            effects.append(Send(None, host, port, "gossip", digest))
        return effects

    def _gossip_targets(self) -> list[str]:
        live = [m.node_id for m in self.live_members() if m.node_id != self.node_id]
        targets = self._rng.sample(live, min(self._config.fanout, len(live)))
        # Like Cassandra: now and then gossip to a down node, so that a node that comes
        # back, or the far side of a healed partition, hears from us even if it is quiet.
        down = [i for i in sorted(self._peers) if _effective(self._peers[i]) == DOWN]
        if down and self._rng.random() < len(down) / (len(live) + 1):
            targets.append(self._rng.choice(down))
        return targets

    def _unknown_seeds(self) -> list[tuple[str, int]]:
        """Seed addresses, and those of restored peers not heard of yet, at which we
        know no member we have heard of in this life."""
        heard = {(m.host, m.port) for m in self.members() if m.state != REMOVED
                 and not (m.node_id in self._peers and self._peers[m.node_id].restored)}
        restored = [(p.member.host, p.member.port) for _, p in sorted(self._peers.items())
                    if p.restored and p.member.state != REMOVED]
        out: list[tuple[str, int]] = []
        for addr in self._seeds + restored:
            if addr not in heard and addr not in out:
                out.append(addr)
        return out

    def _digest(self, now: float, exclude: str | None = None) -> dict[str, Any]:
        """Ourselves in full as ``from``, then every peer (down and removed too) compact:
        id, generation, heartbeat, state, age, down. Tokens and addresses never change
        within a generation, so they travel only to nodes that lack them."""
        entries = [encode_entry(p.member, now - p.last_seen, p.down_since is not None, False)
                   for i, p in sorted(self._peers.items()) if i != exclude]
        return {"from": self._entry_self(), "members": entries}

    def _entry_of(self, node_id: str, now: float) -> dict[str, Any]:
        """The full entry of ourselves or of a known peer, with our view of its age."""
        if node_id == self.node_id:
            return self._entry_self()
        peer = self._peers[node_id]
        return encode_entry(peer.member, now - peer.last_seen, peer.down_since is not None)

    def _entry_self(self) -> dict[str, Any]:
        return encode_entry(self._self, 0.0, False)

    def _probe_ack_body(self, target: str, now: float) -> dict[str, Any]:
        """Our current view of ``target`` (None if unknown), for a probe requester."""
        known = target == self.node_id or target in self._peers
        entry = self._entry_of(target, now) if known else None
        return {"from": self._entry_self(), "target": target, "entry": entry}

    def _send(self, node_id: str, kind: str, body: dict[str, Any]) -> list[Effect]:
        """A Send to a known node, or nothing if we do not know its address."""
        m = self._self if node_id == self.node_id else None
        peer = self._peers.get(node_id)
        if peer is not None:
            m = peer.member
        if m is None or m.state == REMOVED:
            return []
        return [Send(node_id, m.host, m.port, kind, body)]


def _effective(peer: _Peer) -> str:
    if peer.member.state == REMOVED:
        return REMOVED
    return DOWN if peer.down_since is not None else peer.member.state


_HANDLERS = {
    "gossip": Membership._on_gossip,
    "gossip_ack": Membership._on_gossip_ack,
    "gossip_full": Membership._on_merge_only,
    "ping": Membership._on_ping,
    "ping_ack": Membership._on_ping_ack,
    "probe_req": Membership._on_probe_req,
    "probe_ack": Membership._on_merge_only,
}

__all__ = ["Membership", "MembershipConfig", "Member", "Send", "StateChanged", "IdentityClaimed", "Effect",
           "KINDS", "STATES", "JOINING", "NORMAL", "LEAVING", "DOWN", "REMOVED"]
