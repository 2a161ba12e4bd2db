"""Anti-entropy between two replicas of a token range: the exchange protocol (pure).

One :class:`Session` repairs one range ``(start, end]`` between this node (the
initiator, holding a :class:`~ringkv.merkle.MerkleTree` of its own data) and one peer.
It is a state machine driven by its shell (``ringkv.repair``): ``start()`` and
``feed(result)`` return the next effect, and the shell feeds that effect's result back:

=================  =======================================  ============================
effect             the shell does                           and feeds back
=================  =======================================  ============================
``Call(m, body)``  RPC ``m`` to the peer                    the reply dict
``Scan(ranges)``   scans its engine over the token ranges   list of ``(skey, vs)``
``Apply(items)``   writes each ``(skey, vs)`` locally       None
                   (engine merge = join)
``Done(stats)``    the session is over                      --
=================  =======================================  ============================

Protocol (every message bounded by the ``Params`` chunk sizes):

1. ``merkle_open {start, end, depth, root, count}`` -> ``{sid, count, root}``: the peer
   checks out its tree of the range at the same leaf depth (a kept tree refreshed, or a
   new one: ``ringkv.merkle_cache``) and lends it to the session under ``sid``. Equal
   roots and counts: done, one round trip, a few dozen bytes (the peer, given ours, has
   already released its tree).
2. Descent. The compare depth ``d`` is the shallowest at which buckets hold about
   ``keys_per_leaf`` keys (from the larger of the two counts; trees fold to any depth).
   From the root, ``step`` levels at a time: ``merkle_level {sid, level, step, nodes}`` ->
   the ``2**step`` descendants of each differing node; those that differ from the local
   ones form the next frontier. Bytes ~ 8 * 2**step * (differing nodes), so they follow
   the divergence, not the data size.
3. Keys. For the differing buckets at depth ``d``: ``merkle_keys {start, end, depth,
   buckets}`` -> the peer's ``(skey, entry hash)`` there; the local side scans the same
   token ranges. Keys whose hashes differ are pulled (``repair_get {skeys}`` -> version
   sets; the peer may answer a prefix, the rest is asked again) and applied locally, and
   the local version sets the peer lacks or holds differently are pushed
   (``repair_put {items}``). Both sides join, so both end with the join of the two.
4. ``merkle_close {sid}``: the peer checks its tree back in (it also does so on its own
   after a while without a request).

Pulled sets update the local tree incrementally (``MerkleTree.replace``), so one tree
serves sessions with every peer of the range in turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generator, Iterable

from ringkv import merkle, versions
from ringkv.errors import InvalidRequest, RingkvError
from ringkv.merkle import MASK, TOKEN_SPACE


@dataclass(frozen=True)
class Params:
    """Knobs of one session (defaults measured in docs/repair.md)."""

    keys_per_leaf: float = 2.0  # compare depth: buckets hold about this many keys
    step: int = 4  # levels descended per round trip (2**step children per differing node)
    max_nodes: int = 4096  # tree nodes per merkle_level request
    max_buckets: int = 2048  # buckets per merkle_keys request
    max_keys: int = 512  # keys per repair_get request
    push_bytes: int = 1 << 20  # repair_put batches of about this many bytes


@dataclass
class Stats:
    """What a session did; the shell adds the bytes it sent and received."""

    rounds: int = 0
    differing_buckets: int = 0
    keys_compared: int = 0
    keys_received: int = 0
    keys_sent: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    invalid: int = 0  # peer version sets refused as malformed
    compare_depth: int = 0

    def add(self, other: "Stats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class Call:
    method: str
    body: dict


@dataclass(frozen=True)
class Scan:
    ranges: list[tuple[int, int]]


@dataclass(frozen=True)
class Apply:
    items: list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Done:
    stats: Stats = field(default_factory=Stats)


Effect = Call | Scan | Apply | Done


class Session:
    """One repair exchange of ``tree``'s range with one peer."""

    def __init__(self, tree: merkle.MerkleTree, params: Params = Params()) -> None:
        self.tree, self.params, self.stats = tree, params, Stats()
        self._gen = self._run()

    def start(self) -> Effect:
        return self._next(None)

    def feed(self, result: Any) -> Effect:
        return self._next(result)

    def _next(self, result: Any) -> Effect:
        try:
            effect = self._gen.send(result)
        except StopIteration:
            return Done(self.stats)
        if isinstance(effect, Call):
            self.stats.rounds += 1
        return effect

    # -- the protocol ---------------------------------------------------------------------

    def _run(self) -> Generator[Effect, Any, None]:
        tree = self.tree
        reply = yield Call("merkle_open", {"start": tree.start, "end": tree.end, "depth": tree.depth,
                                           "root": tree.root(), "count": tree.count})
        sid, count, root = reply.get("sid"), _int(reply, "count"), _int(reply, "root")
        if root == tree.root() and count == tree.count:
            return  # the peer saw the equality too and has already released its tree
        depth = merkle.compare_depth(max(count, tree.count), self.params.keys_per_leaf, tree.depth)
        self.stats.compare_depth = depth
        buckets = yield from self._descend(sid, depth)
        self.stats.differing_buckets = len(buckets)
        for chunk in merkle.chunks(buckets, self.params.max_buckets):
            yield from self._exchange_keys(depth, chunk)
        yield Call("merkle_close", {"sid": sid})

    def _descend(self, sid: Any, depth: int) -> Generator[Effect, Any, list[int]]:
        """Differing node indices at ``depth``, ``step`` levels per round trip."""
        frontier, level = [0], 0
        while level < depth and frontier:
            step = min(self.params.step, depth - level)
            nxt: list[int] = []
            for chunk in merkle.chunks(frontier, self.params.max_nodes):
                reply = yield Call("merkle_level", {"sid": sid, "level": level, "step": step,
                                                    "nodes": merkle.pack_indices(chunk)})
                theirs = merkle.unpack_hashes(_bytes(reply, "hashes"))
                ours = self.tree.children(level, chunk, step)
                if len(theirs) != len(ours):
                    raise InvalidRequest("merkle_level reply has the wrong number of hashes")
                nxt += _differing(chunk, step, ours, theirs)
            frontier, level = nxt, level + step
        return frontier

    def _exchange_keys(self, depth: int, buckets: list[int]) -> Generator[Effect, Any, None]:
        tree = self.tree
        reply = yield Call("merkle_keys", {"start": tree.start, "end": tree.end, "depth": depth,
                                           "buckets": merkle.pack_indices(buckets)})
        keys = reply.get("keys") or []
        theirs = dict(zip(keys, merkle.unpack_hashes(_bytes(reply, "hashes"))))
        if len(theirs) != len(keys):
            raise InvalidRequest("merkle_keys reply: keys and hashes differ in number")
        local = yield Scan(merkle.bucket_ranges(tree.start, tree.end, depth, buckets))
        ours = {skey: (merkle.entry_hash(skey, vs), vs) for skey, vs in local}
        self.stats.keys_compared += len(set(ours) | set(theirs))
        need = [k for k, h in theirs.items() if k not in ours or ours[k][0] != h]
        pulled = (yield from self._pull(sorted(need), ours)) if need else {}
        push = []
        for k, (h, vs) in ours.items():
            if theirs.get(k) == h:
                continue
            got = pulled.get(k)
            if got is None:
                push.append((k, vs))
            elif (merged := versions.merge_bytes(vs, got)) != got:  # ours adds something
                push.append((k, merged))
        for batch in _batches(sorted(push), self.params.push_bytes):
            yield Call("repair_put", {"items": [[k, v] for k, v in batch]})
            self.stats.keys_sent += len(batch)

    def _pull(self, need: list[bytes], ours: dict) -> Generator[Effect, Any, dict[bytes, bytes]]:
        """Fetch and apply the peer's sets of ``need``; returns the valid ones by key."""
        got: list[tuple[bytes, bytes]] = []
        pending = need
        for _ in range(len(need) + 1):  # each round answers at least one key, or we stop
            if not pending:
                break
            ask = pending[:self.params.max_keys]
            reply = yield Call("repair_get", {"skeys": ask})
            sets = reply.get("vs") or []
            if not sets:
                break
            got += [(k, vs) for k, vs in zip(ask, sets) if type(vs) is bytes]
            pending = pending[len(sets[:len(ask)]):]
        items = [(k, vs) for k, vs in got if self._valid(vs)]
        if items:
            yield Apply(items)
            self.stats.keys_received += len(items)
            for skey, vs in items:
                self._account(skey, ours.get(skey), vs)
        return dict(items)

    def _valid(self, vs: bytes) -> bool:
        try:
            versions.check(vs)
        except RingkvError:
            self.stats.invalid += 1
            return False
        return True

    def _account(self, skey: bytes, old: tuple[int, bytes] | None, pulled: bytes) -> None:
        """Keep the local tree equal to the engine after applying ``pulled`` (a join)."""
        merged = pulled if old is None else versions.merge_bytes(old[1], pulled)
        new_h = merkle.entry_hash(skey, merged)
        self.tree.replace(int.from_bytes(skey[:8], "big"), old[0] if old else None, new_h)


def _differing(parents: list[int], step: int, ours: list[int], theirs: list[int]) -> list[int]:
    n = 1 << step
    out: list[int] = []
    for j, p in enumerate(parents):
        base = p << step
        for k in range(n):
            if ours[j * n + k] != theirs[j * n + k]:
                out.append(base + k)
    return out


def _batches(items: list[tuple[bytes, bytes]], budget: int) -> Iterable[list[tuple[bytes, bytes]]]:
    batch: list[tuple[bytes, bytes]] = []
    size = 0
    for k, v in items:
        if batch and size + len(k) + len(v) > budget:
            yield batch
            batch, size = [], 0
        batch.append((k, v))
        size += len(k) + len(v) + 8
    if batch:
        yield batch


def _int(reply: dict, name: str) -> int:
    value = reply.get(name)
    if type(value) is not int:
        raise InvalidRequest(f"reply field {name} must be an int")
    return value


def _bytes(reply: dict, name: str) -> bytes:
    value = reply.get(name)
    if type(value) is not bytes:
        raise InvalidRequest(f"reply field {name} must be bytes")
    return value


# -- which ranges to repair with whom --------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """Repair ``(start, end]`` with each of ``peers`` (the other replicas of the range)."""

    start: int
    end: int
    peers: tuple[str, ...]


def plan(ranges: list[tuple[int, int]], replicas_of: Any, node_id: str,
         only: tuple[int, int] | None = None) -> list[Task]:
    """The repair tasks of ``node_id``: every vnode range it replicates (``ranges`` in
    token order, ``replicas_of(end)`` their preference lists), cut to ``only`` when given,
    adjacent pieces with the same peers merged."""
    tasks: list[Task] = []
    for start, end in ranges:
        replicas = replicas_of(end)
        if node_id not in replicas:
            continue
        peers = tuple(sorted(r for r in replicas if r != node_id))
        pieces = [(start, end)] if only is None else intersect((start, end), only)
        for s, e in pieces:
            if tasks and tasks[-1].end == s and tasks[-1].peers == peers:
                tasks[-1] = Task(tasks[-1].start, e, peers)
            else:
                tasks.append(Task(s, e, peers))
    if len(tasks) > 1 and tasks[-1].end == tasks[0].start and tasks[-1].peers == tasks[0].peers:
        tasks[0] = Task(tasks[-1].start, tasks[0].end, tasks[0].peers)
        tasks.pop()
    return tasks


def _linear(start: int, end: int) -> list[tuple[int, int]]:
    """Tokens of ``(start, end]`` as half-open intervals of ``[0, 2**64)``."""
    if start == end:
        return [(0, TOKEN_SPACE)]
    if start < end:
        return [(start + 1, end + 1)]
    return [(a, b) for a, b in ((start + 1, TOKEN_SPACE), (0, end + 1)) if a < b]


def intersect(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """The ring ranges ``(s, e]`` common to ranges ``a`` and ``b`` (each may wrap)."""
    spans = sorted((max(a0, b0), min(a1, b1)) for a0, a1 in _linear(*a) for b0, b1 in _linear(*b)
                   if max(a0, b0) < min(a1, b1))
    if len(spans) > 1 and spans[0][0] == 0 and spans[-1][1] == TOKEN_SPACE:
        spans[-1] = (spans[-1][0], spans[0][1] + TOKEN_SPACE)  # joins across the wrap
        spans.pop(0)
    return [((lo - 1) & MASK, (hi - 1) & MASK) for lo, hi in spans]


def parse_range(text: str) -> tuple[int, int]:
    """``"START:END"`` -> ``(start, end)``, tokens in 0..2**64-1."""
    left, sep, right = text.partition(":")
    if not sep or not left.strip().isdigit() or not right.strip().isdigit():
        raise InvalidRequest(f"range {text!r}: expected START:END (tokens)")
    start, end = int(left), int(right)
    if start > MASK or end > MASK:
        raise InvalidRequest("range tokens must be in 0..2**64-1")
    return start, end


__all__ = ["Params", "Stats", "Call", "Scan", "Apply", "Done", "Session", "Task", "plan",
           "intersect", "parse_range"]
