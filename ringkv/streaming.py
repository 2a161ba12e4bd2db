"""Membership changes while serving, the pure part: ring views, pending writes, stream plans.

What it decides (``ringkv/topology.py`` is the asyncio shell that carries it out):

- :class:`RingView` turns the token owners of the membership list into two rings. The
  *read ring* holds the normal and leaving nodes: reads and the W count use it. The
  *future ring* is what the ring becomes once every move in progress finished: normal and
  joining nodes, without leaving ones. A node of the future ring that is not a replica
  of a token in the read ring is a *pending* replica of that token (Cassandra's pending
  ranges): writes also go to it, so nothing written during the move is missed.
- Replacement is inferred, not announced: a joining or normal node whose tokens include
  every token of another node with an older generation *replaces* it. The replaced node
  stays in the read ring until its replacement is normal, and is out of the future ring.
- :func:`with_pending` raises a write requirement by one ack per pending replica (W + P
  among current and pending replicas, as Cassandra's blockFor does), so a write acked
  during a move still has W copies among the replicas of the ring that follows.
- Plans: :func:`join_plan`, :func:`replace_plan`, :func:`leave_plan`, :func:`remove_plan`
  list :class:`StreamTask` s (range, target, sources in order of preference). A range is
  streamed from the replica that gives it up when that one is alive (then the new replica
  set holds every write the old one held at W); when it is dead, from every surviving
  replica (the union; joining twice is harmless).
- :class:`Progress` is the resumable state: which tasks are done, the cursor (last storage
  key applied) of the task in flight, counters. It round-trips through plain dicts for
  ``data_dir/streaming.json``.

Pure: no IO, no clock, no asyncio; liveness comes in as a predicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from ringkv.coordinator import Requirement
from ringkv.ring import MAX_TOKEN, NodeInfo, Ring, moved_ranges, scan_bounds

JOINING, NORMAL, LEAVING = "joining", "normal", "leaving"
OPS = ("join", "replace", "decommission", "removenode")
# op status: pending (not started), waiting (ring settling), streaming, finishing
# (publishing the new state), done, failed
STATUSES = ("pending", "waiting", "streaming", "finishing", "done", "failed")


@dataclass(frozen=True)
class Owner:
    """What the view needs of one published ring member (``membership.Member`` fits)."""

    node_id: str
    state: str
    tokens: tuple[int, ...]
    dc: str = "dc1"
    rack: str = "rack1"
    host: str = "127.0.0.1"
    port: int = 0
    http_port: int = 0
    generation: int = 0

    def info(self) -> NodeInfo:
        return NodeInfo(self.node_id, self.tokens, self.dc, self.rack, self.host, self.port,
                        self.http_port)


def owner_of(member: Any) -> Owner:
    """An Owner from any record with the same field names (e.g. ``membership.Member``)."""
    return Owner(member.node_id, member.state, tuple(member.tokens), member.dc, member.rack,
                 member.host, member.port, member.http_port, member.generation)


def replacements(owners: Sequence[Owner]) -> dict[str, str]:
    """Replaced node id -> replacing node id (a newer-generation owner of all its tokens)."""
    out: dict[str, str] = {}
    for old in owners:
        if not old.tokens:
            continue
        toks = set(old.tokens)
        for new in owners:
            if (new.node_id != old.node_id and new.generation > old.generation
                    and new.state in (JOINING, NORMAL) and toks <= set(new.tokens)):
                out[old.node_id] = new.node_id
                break
    return out


class RingView:
    """The read ring, the future ring and the pending replicas of one membership view."""

    def __init__(self, owners: Iterable[Owner], replication: Mapping[str, int],
                 previous: Ring | None = None) -> None:
        self.owners = sorted(owners, key=lambda o: o.node_id)
        self.replaced = replacements(self.owners)
        replaced_by_normal = {old for old, new in self.replaced.items()
                              if self._state(new) == NORMAL}
        read = [o.info() for o in self.owners if o.state in (NORMAL, LEAVING)
                and o.node_id not in replaced_by_normal]
        future = [o.info() for o in self.owners if o.state in (NORMAL, JOINING)
                  and o.node_id not in self.replaced]
        self.read_ring = Ring(read, dict(replication))
        self.moving = {i.node_id for i in read} != {i.node_id for i in future}
        self.future_ring = Ring(future, dict(replication)) if self.moving else self.read_ring
        # The read ring before the last move finished, while its handover lasts (see
        # handover()); only its nodes still published normal can take writes.
        self.previous_ring: Ring | None = None
        self._handover_nodes: set[str] = set()
        if previous is not None and members(previous) != members(self.read_ring):
            normal = {o.node_id for o in self.owners if o.state == NORMAL}
            self.previous_ring = previous
            self._handover_nodes = {n.node_id for n in previous.nodes if n.node_id in normal}
        if self._handover_nodes:
            self.moving = True  # writes take the general path, with pending replicas

    def _state(self, node_id: str) -> str:
        for o in self.owners:
            if o.node_id == node_id:
                return o.state
        return ""

    @property
    def all_nodes(self) -> list[NodeInfo]:
        """Every token owner (joining ones too), by id: what the ``ring`` RPC lists."""
        return [o.info() for o in self.owners]

    def pending(self, token: int) -> list[str]:
        """Future replicas of ``token`` that are not read replicas of it (ring-walk order)."""
        if not self.moving:
            return []
        current = self.read_ring.replicas(token)
        return [n for n in self.future_ring.replicas(token) if n not in current]

    def handover(self, token: int) -> list[str]:
        """Replicas of ``token`` in the previous read ring that are neither read nor
        future replicas of it now, and still published normal (ring-walk order): the
        nodes a finished join took the range from. While the handover lasts (the node
        keeps ``previous`` for ``streaming.handover_s``), writes go to them too, as
        pending replicas (W + P), because a coordinator that has not yet heard that the
        join finished reads the old replica set."""
        if not self._handover_nodes:
            return []
        assert self.previous_ring is not None
        current, future = self.read_ring.replicas(token), self.future_ring.replicas(token)
        nodes = self._handover_nodes
        return [n for n in self.previous_ring.replicas(token)
                if n in nodes and n not in current and n not in future]

    def forward_targets(self, token: int, me: str) -> list[str]:
        """Where ``me`` forwards a replica write of ``token`` it applied: empty when ``me``
        keeps the range (a future replica of it), the usual case.

        A node that gives the range up (a read replica, not a future one: a join's giver,
        a leaving node) forwards to the pending replicas only: the others were replicas
        when the write was coordinated and got their own copy, while a pending one may
        have streamed the range from ``me`` before the write landed. A node that is no
        replica at all (the move finished, or a coordinator's view was stale) cannot tell
        who gained the range from it: it forwards to every read and future replica."""
        future = self.future_ring.replicas(token)
        if me in future:
            return []
        current = self.read_ring.replicas(token) if self.moving else future
        if me in current:
            return [n for n in future if n not in current]
        return current + [n for n in future if n not in current]


def members(ring: Ring) -> frozenset[tuple[str, tuple[int, ...]]]:
    """Who owns which tokens in ``ring``: equal for two rings that place every key alike."""
    return frozenset((n.node_id, tuple(n.tokens)) for n in ring.nodes)


def join_finished(old: RingView, new: RingView) -> bool:
    """True when a node ``old`` saw joining is in ``new``'s read ring: a join (or a
    replacement) finished between the two views. Learning of a node that was already
    normal (a fresh cluster's nodes meeting) is not a move and returns False."""
    joining = {o.node_id for o in old.owners if o.state == JOINING}
    return bool(joining) and any(n.node_id in joining for n in new.read_ring.nodes)


def moving(owners: Iterable[Owner], exclude: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(node id, state) of every owner that is joining or leaving (down ones included:
    a crashed node is still mid-move), except those in ``exclude``, by id. ringkv runs
    one range movement at a time: an operation is refused while this is not empty."""
    skip = set(exclude)
    return sorted((o.node_id, o.state) for o in owners
                  if o.state in (JOINING, LEAVING) and o.node_id not in skip)


def yields_to(op: str, subject: str, others: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Of the concurrent moves ``others`` (from :func:`moving`), those an operation that
    found them only after its settle step gives way to: joins and replacements before
    leaves (decommission, removenode), then the lower node id. Exactly one of a set of
    racing moves goes on; the others stop before planning and wait, published, which is
    safe in that order: every ring on the way has its replicas among the current and
    future ones, where W + P acks guarantee W copies. A leave finishing while a join waits
    would not (docs/topology.md)."""
    rank = {JOINING: 0, LEAVING: 1}
    mine = (0 if op in ("join", "replace") else 1, subject)
    return [(i, state) for i, state in others if (rank.get(state, 1), i) < mine]


def with_pending(req: Requirement, pending: Sequence[str],
                 dc_of: Mapping[str, str]) -> Requirement:
    """``req`` with each pending replica added to the groups it belongs to, one more ack
    needed per pending replica added (a group of one dc only takes pending nodes of it)."""
    groups = []
    for members, needed in req.groups:
        dcs = {dc_of.get(m) for m in members}
        scoped = len(dcs) == 1 and len(req.groups) > 1 or _local_group(req)
        extra = tuple(p for p in pending if p not in members
                      and (not scoped or dc_of.get(p) in dcs))
        groups.append((tuple(members) + extra, needed + len(extra)))
    return Requirement(req.level, tuple(groups))


def _local_group(req: Requirement) -> bool:
    return isinstance(req.level, str) and req.level.startswith("LOCAL_")


# ---------------------------------------------------------------- plans


@dataclass(frozen=True)
class StreamTask:
    """Stream the storage keys of token range ``(start, end]`` to ``target``, reading them
    from the first live node of ``sources``."""

    start: int
    end: int
    target: str
    sources: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "target": self.target,
                "sources": list(self.sources)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StreamTask":
        return cls(int(d["start"]), int(d["end"]), str(d["target"]),
                   tuple(str(s) for s in d["sources"]))


Alive = Callable[[str], bool]


def _gain_tasks(old: Ring, new: Ring, target: str, alive: Alive,
                exclude: Sequence[str] = ()) -> list[StreamTask]:
    """Tasks for every range ``target`` gains between ``old`` and ``new``.

    Source: the live replicas that give the range up, then the others; if none that gives
    it up is alive, one task per surviving old replica (their union)."""
    tasks: list[StreamTask] = []
    for move in moved_ranges(old, new):
        if target not in move.gained:
            continue
        givers = [n for n in move.lost if alive(n) and n not in exclude]
        others = [n for n in move.old if n not in move.lost and n != target]
        if givers:
            tasks.append(StreamTask(move.start, move.end, target, tuple(givers + others)))
            continue
        for i, src in enumerate(others):
            rest = others[:i] + others[i + 1:]
            tasks.append(StreamTask(move.start, move.end, target, (src, *rest)))
    return tasks


def join_plan(view: RingView, me: NodeInfo, alive: Alive) -> list[StreamTask]:
    """What a joining node ``me`` streams to itself: the ranges it gains."""
    old = view.read_ring
    return _gain_tasks(old, old.with_node(me), me.node_id, alive)


def replace_plan(view: RingView, me: NodeInfo, dead: str, alive: Alive) -> list[StreamTask]:
    """What ``me`` (taking ``dead``'s tokens) streams to itself from the survivors."""
    old = view.read_ring
    new = old.without_node(dead).with_node(me) if dead in old else old.with_node(me)
    return _gain_tasks(old, new, me.node_id, alive, exclude=(dead,))


def leave_plan(view: RingView, me: str) -> list[StreamTask]:
    """What a decommissioning node streams out: each of its ranges to every new owner."""
    old = view.read_ring
    if me not in old:
        return []
    tasks = []
    for move in moved_ranges(old, old.without_node(me)):
        if me in move.lost:
            tasks += [StreamTask(move.start, move.end, g, (me,)) for g in move.gained]
    return tasks


def remove_plan(view: RingView, dead: str, alive: Alive) -> list[StreamTask]:
    """Re-replicate a dead node's ranges: each new owner gets the union of the survivors."""
    old = view.read_ring
    if dead not in old:
        return []
    new = old.without_node(dead)
    tasks: list[StreamTask] = []
    for move in moved_ranges(old, new):
        if dead not in move.lost:
            continue
        survivors = [n for n in move.old if n != dead]
        for g in move.gained:
            for i, src in enumerate(survivors):
                rest = survivors[:i] + survivors[i + 1:]
                tasks.append(StreamTask(move.start, move.end, g, (src, *rest)))
    return tasks


def first_live(sources: Sequence[str], alive: Alive, skip: Iterable[str] = ()) -> str | None:
    """The first live source not in ``skip``."""
    bad = set(skip)
    return next((s for s in sources if s not in bad and alive(s)), None)


# ---------------------------------------------------------------- scanning


def resume_bounds(start: int, end: int, after: bytes | None) -> list[tuple[bytes, bytes | None]]:
    """Engine scan bounds ``[lo, hi)`` for what is left of range ``(start, end]`` once every
    storage key up to and including ``after`` has been streamed (None = nothing yet)."""
    bounds = scan_bounds(start, end)
    if after is None:
        return bounds
    for i, (lo, hi) in enumerate(bounds):
        if lo <= after and (hi is None or after < hi):
            return [(after + b"\x00", hi)] + bounds[i + 1:]
    return bounds


def in_bounds(skey: bytes, start: int, end: int) -> bool:
    """Whether a storage key's token lies in ``(start, end]``."""
    return any(lo <= skey and (hi is None or skey < hi) for lo, hi in scan_bounds(start, end))


# ---------------------------------------------------------------- progress


@dataclass
class Progress:
    """The resumable state of one membership operation of this node.

    ``done`` holds the indexes of finished tasks; ``cursors`` the last storage key applied
    of tasks begun but not finished. Advancing the cursor only after a batch is durable
    on the target makes a restart re-stream at most one batch (harmless: a join)."""

    op: str
    subject: str  # the node joining, leaving, removed or replaced
    status: str = "pending"
    tasks: list[StreamTask] = field(default_factory=list)
    planned: bool = False
    done: set[int] = field(default_factory=set)
    cursors: dict[int, bytes] = field(default_factory=dict)
    keys: int = 0
    bytes: int = 0
    error: str = ""
    replacing: str = ""  # replace: the dead node whose tokens this node took

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}")

    @property
    def finished(self) -> bool:
        return self.status == "done"

    def plan(self, tasks: Sequence[StreamTask]) -> None:
        """Fix the task list (once: a resumed operation keeps the plan it persisted)."""
        if not self.planned:
            self.tasks, self.planned = list(tasks), True

    def next_task(self) -> int | None:
        """The index of the first task not done, or None when all are."""
        return next((i for i in range(len(self.tasks)) if i not in self.done), None)

    def advance(self, index: int, last_key: bytes | None, keys: int, nbytes: int,
                finished: bool) -> None:
        """A batch of task ``index`` is durable on its target."""
        self.keys += keys
        self.bytes += nbytes
        if finished:
            self.done.add(index)
            self.cursors.pop(index, None)
        elif last_key is not None:
            self.cursors[index] = last_key

    def summary(self) -> dict[str, Any]:
        """What ``status`` and ``ringkv streams`` show."""
        total = len(self.tasks)
        return {"op": self.op, "subject": self.subject, "status": self.status,
                "tasks": total, "tasks_done": len(self.done), "keys": self.keys,
                "bytes": self.bytes, "error": self.error, "replacing": self.replacing,
                "percent": round(100.0 * len(self.done) / total, 1) if total else
                (100.0 if self.finished else 0.0)}

    def to_dict(self) -> dict[str, Any]:
        return {"format": 1, "op": self.op, "subject": self.subject, "status": self.status,
                "planned": self.planned, "tasks": [t.to_dict() for t in self.tasks],
                "done": sorted(self.done),
                "cursors": {str(i): k.hex() for i, k in sorted(self.cursors.items())},
                "keys": self.keys, "bytes": self.bytes, "error": self.error,
                "replacing": self.replacing}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Progress":
        """Inverse of :meth:`to_dict`; ValueError/KeyError/TypeError on a damaged dict."""
        if d.get("format") != 1:
            raise ValueError(f"unknown streaming state format {d.get('format')!r}")
        return cls(op=str(d["op"]), subject=str(d["subject"]), status=str(d["status"]),
                   tasks=[StreamTask.from_dict(t) for t in d["tasks"]],
                   planned=bool(d["planned"]), done={int(i) for i in d["done"]},
                   cursors={int(i): bytes.fromhex(k) for i, k in d["cursors"].items()},
                   keys=int(d["keys"]), bytes=int(d["bytes"]), error=str(d.get("error", "")),
                   replacing=str(d.get("replacing", "")))


__all__ = ["Owner", "owner_of", "RingView", "replacements", "moving", "yields_to", "with_pending", "StreamTask",
           "join_plan", "replace_plan", "leave_plan", "remove_plan", "first_live",
           "resume_bounds", "in_bounds", "Progress", "OPS", "STATUSES", "MAX_TOKEN"]
