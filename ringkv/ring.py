"""The token ring: tokens, virtual nodes, replica placement and range ownership (pure).

A key's token is the unsigned 64-bit xxh3 hash of the key, fixed forever once data exists.
Every node owns many tokens (virtual nodes). The token space is cut into ranges
``(previous token, token]``; a range's preference list is found by walking clockwise from
its end token and taking, per data center, ``rf`` distinct physical nodes, preferring
distinct racks (Cassandra's NetworkTopologyStrategy).

Invariants:
- Pure: no IO, no clock, no module-level random. Randomness comes in as a ``random.Random``.
- A ``Ring`` is immutable once built; membership changes build a new one (``with_node``,
  ``without_node``), and ``moved_ranges(old, new)`` says what must stream.
- Deterministic: the same set of nodes gives the same ring whatever order they are listed
  in. If two nodes claim the same token, the smaller node id keeps it.
- ``replicas(token)`` and ``walk(token)`` return nodes in clockwise (ring-walk) order, so
  the first entry is the primary replica. Preference lists are computed once per range
  and cached, since they change only with membership.
- A range ``(start, end]`` with ``start >= end`` wraps through 0; ``start == end`` (a ring
  with a single token) is the whole token space.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from dataclasses import dataclass
from typing import Iterable, NamedTuple

import xxhash

TOKEN_SPACE = 1 << 64  # tokens are 0 .. 2**64 - 1
MAX_TOKEN = TOKEN_SPACE - 1

_xxh3 = xxhash.xxh3_64_intdigest


def token_for(key: bytes) -> int:
    """The token of a user key: unsigned xxh3_64, in 0 .. 2**64-1."""
    return _xxh3(key)


def storage_key(key: bytes) -> bytes:
    """The engine key of a user key: 8-byte big-endian token, then the key.

    Token-ordered storage keys make every token range one contiguous engine scan."""
    return _xxh3(key).to_bytes(8, "big") + key


def user_key(skey: bytes) -> bytes:
    """The user key inside a storage key."""
    return skey[8:]


def token_of(skey: bytes) -> int:
    """The token prefix of a storage key."""
    return int.from_bytes(skey[:8], "big")


def generate_tokens(rng: random.Random, count: int) -> tuple[int, ...]:
    """``count`` distinct random tokens, sorted. Deterministic for a seeded ``rng``."""
    if count < 0:
        raise ValueError("token count must be >= 0")
    tokens: set[int] = set()
    while len(tokens) < count:
        tokens.add(rng.getrandbits(64))
    return tuple(sorted(tokens))


@dataclass(frozen=True)
class NodeInfo:
    """A physical node: its id, the tokens it owns, where it lives and how to reach it."""

    node_id: str
    tokens: tuple[int, ...]
    dc: str = "dc1"
    rack: str = "rack1"
    host: str = "127.0.0.1"
    port: int = 0
    http_port: int = 0

    def __post_init__(self) -> None:
        # tokens often arrive as a list (msgpack, TOML); a tuple keeps NodeInfo hashable
        if not isinstance(self.tokens, tuple):
            object.__setattr__(self, "tokens", tuple(self.tokens))


class RangeMove(NamedTuple):
    """A token range ``(start, end]`` whose replica set changes between two rings."""

    start: int
    end: int
    old: tuple[str, ...]  # replicas before, ring-walk order
    new: tuple[str, ...]  # replicas after, ring-walk order

    @property
    def gained(self) -> tuple[str, ...]:
        """Nodes that must receive this range (stream to them)."""
        return tuple(n for n in self.new if n not in self.old)

    @property
    def lost(self) -> tuple[str, ...]:
        """Nodes that no longer replicate this range (may drop it once streamed)."""
        return tuple(n for n in self.old if n not in self.new)


class Ring:
    """An immutable token ring with per-data-center replication factors."""

    def __init__(self, nodes: Iterable[NodeInfo], replication: dict[str, int]) -> None:
        self._nodes = _index_nodes(nodes)
        self.replication = _check_replication(replication)
        self._tokens, self._owners = _token_table(self._nodes.values())
        self._on_ring = len(set(self._owners))  # nodes left holding at least one token
        self._dc_sizes = _dc_sizes(self._nodes.values(), self._owners, self.replication)
        self._plans: list[tuple[str, ...] | None] = [None] * len(self._tokens)
        self._walks: list[tuple[str, ...] | None] = [None] * len(self._tokens)

    # -- lookups -------------------------------------------------------------------

    @property
    def nodes(self) -> list[NodeInfo]:
        """Every node, sorted by node id."""
        return [self._nodes[n] for n in sorted(self._nodes)]

    def node(self, node_id: str) -> NodeInfo:
        """The NodeInfo of a member; KeyError if it is not one."""
        return self._nodes[node_id]

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    @property
    def tokens(self) -> tuple[int, ...]:
        """Every token on the ring, sorted."""
        return tuple(self._tokens)

    def replicas(self, token: int) -> list[str]:
        """The preference list of a token: per dc ``rf`` distinct nodes, ring-walk order."""
        i = bisect_left(self._tokens, token)
        if i == len(self._tokens):
            if not i:
                return []
            i = 0  # past the last token: wrap to the first
        plan = self._plans[i]
        if plan is None:
            plan = self._plans[i] = self._place(i)
        return list(plan)

    def replicas_for_key(self, key: bytes) -> list[str]:
        """The preference list of a user key."""
        return self.replicas(_xxh3(key))

    def walk(self, token: int) -> list[str]:
        """Every node that owns a token, once each, clockwise from ``token``."""
        if not self._tokens:
            return []
        i = bisect_left(self._tokens, token) % len(self._tokens)
        order = self._walks[i]
        if order is None:
            order = self._walks[i] = tuple(self._distinct_from(i))
        return list(order)

    # -- ranges --------------------------------------------------------------------

    def ranges(self) -> list[tuple[int, int]]:
        """Every vnode range ``(start, end]`` in token order (the first one wraps)."""
        t = self._tokens
        return [(t[i - 1], t[i]) for i in range(len(t))]

    def ranges_of(self, node_id: str) -> list[tuple[int, int]]:
        """The ``(start, end]`` ranges ``node_id`` replicates, adjacent ranges coalesced."""
        mine = [r for i, r in enumerate(self.ranges()) if node_id in self._plan(i)]
        return _coalesce(mine)

    def ownership(self) -> dict[str, float]:
        """Fraction of the token space each node replicates; sums to the total rf placed."""
        owned = dict.fromkeys(sorted(self._nodes), 0.0)
        for i, (start, end) in enumerate(self.ranges()):
            width = range_width(start, end) / TOKEN_SPACE
            for n in self._plan(i):
                owned[n] += width
        return owned

    def primary_ownership(self) -> dict[str, float]:
        """Fraction of the token space for which each node is the first replica."""
        owned = dict.fromkeys(sorted(self._nodes), 0.0)
        for i, (start, end) in enumerate(self.ranges()):
            owned[self._owners[i]] += range_width(start, end) / TOKEN_SPACE
        return owned

    # -- membership changes --------------------------------------------------------

    def with_node(self, info: NodeInfo) -> "Ring":
        """A new ring with ``info`` added (or replacing the node of the same id)."""
        others = [n for n in self._nodes.values() if n.node_id != info.node_id]
        return Ring(others + [info], self.replication)

    def without_node(self, node_id: str) -> "Ring":
        """A new ring without ``node_id``."""
        return Ring([n for n in self._nodes.values() if n.node_id != node_id], self.replication)

    # -- placement -----------------------------------------------------------------

    def _plan(self, i: int) -> tuple[str, ...]:
        plan = self._plans[i]
        if plan is None:
            plan = self._plans[i] = self._place(i)
        return plan

    def _distinct_from(self, i: int) -> Iterable[str]:
        """Node ids clockwise from token index ``i``, each the first time it appears."""
        seen: set[str] = set()
        owners, n = self._owners, len(self._owners)
        for k in range(n):
            node_id = owners[(i + k) % n]
            if node_id not in seen:
                seen.add(node_id)
                yield node_id
                if len(seen) == self._on_ring:
                    return

    def _place(self, i: int) -> tuple[str, ...]:
        """NetworkTopologyStrategy for the range ending at token index ``i``."""
        pickers = {dc: _DcPicker(rf, racks, count) for dc, (rf, racks, count) in self._dc_sizes.items()}
        pending = sum(1 for p in pickers.values() if not p.done)
        chosen: list[str] = []
        for node_id in self._distinct_from(i):
            if not pending:
                break
            info = self._nodes[node_id]
            picker = pickers.get(info.dc)
            if picker is None or picker.done:
                continue
            if picker.offer(info.rack):
                chosen.append(node_id)  # _distinct_from yields in walk order: list stays ordered
                pending -= picker.done
        return tuple(chosen)


class _DcPicker:
    """Replica choice inside one data center, fed nodes in ring-walk order.

    Take a node from a rack not yet used; take a node from a used rack only while there are
    more replicas to place than racks (``rf - racks`` such repeats, the first ones met).
    This equals Cassandra's "skip, then fill from the skipped in ring order" rule, in one
    pass, and ends within one walk of the ring because every rack is met."""

    __slots__ = ("left", "repeats", "racks", "done")

    def __init__(self, rf: int, rack_count: int, node_count: int) -> None:
        self.left = min(rf, node_count)
        self.repeats = self.left - rack_count
        self.racks: set[str] = set()
        self.done = self.left == 0

    def offer(self, rack: str) -> bool:
        """Whether to take a node of ``rack``; updates the state when it is taken."""
        if rack in self.racks:
            if self.repeats <= 0:
                return False
            self.repeats -= 1
        else:
            self.racks.add(rack)
        self.left -= 1
        self.done = self.left == 0
        return True


def moved_ranges(old: Ring, new: Ring) -> list[RangeMove]:
    """The token ranges whose replica set differs between ``old`` and ``new``.

    Cuts the token space at every token of either ring, so each piece has one replica set
    in each; adjacent pieces with the same change are coalesced. Order: by token."""
    cuts = sorted(set(old._tokens) | set(new._tokens))
    moves: list[RangeMove] = []
    for k, end in enumerate(cuts):
        start = cuts[k - 1]
        before, after = tuple(old.replicas(end)), tuple(new.replicas(end))
        if set(before) == set(after):
            continue
        if moves and moves[-1].end == start and (moves[-1].old, moves[-1].new) == (before, after):
            moves[-1] = moves[-1]._replace(end=end)
        else:
            moves.append(RangeMove(start, end, before, after))
    return moves


def range_width(start: int, end: int) -> int:
    """Number of tokens in ``(start, end]``; ``start == end`` is the whole space."""
    return (end - start - 1) % TOKEN_SPACE + 1


def in_range(token: int, start: int, end: int) -> bool:
    """Whether ``token`` lies in ``(start, end]`` (which may wrap through 0)."""
    if start < end:
        return start < token <= end
    return token > start or token <= end


def scan_bounds(start: int, end: int) -> list[tuple[bytes, bytes | None]]:
    """Engine scan bounds ``[lo, hi)`` over storage keys covering the range ``(start, end]``.

    A wrapping range becomes two scans; ``hi=None`` means to the end of the keyspace."""
    def bound(token: int) -> bytes | None:
        return None if token > MAX_TOKEN else token.to_bytes(8, "big")

    lo = (start + 1) % TOKEN_SPACE
    if start < end:
        return [(lo.to_bytes(8, "big"), bound(end + 1))]
    tail = [] if start == MAX_TOKEN else [(lo.to_bytes(8, "big"), None)]
    return tail + [(b"", bound(end + 1))]


def _index_nodes(nodes: Iterable[NodeInfo]) -> dict[str, NodeInfo]:
    by_id: dict[str, NodeInfo] = {}
    for info in nodes:
        if info.node_id in by_id:
            raise ValueError(f"node id {info.node_id!r} appears twice")
        if any(not 0 <= t <= MAX_TOKEN for t in info.tokens):
            raise ValueError(f"node {info.node_id!r} has a token outside 0..2**64-1")
        by_id[info.node_id] = info
    return by_id


def _check_replication(replication: dict[str, int]) -> dict[str, int]:
    if any(rf < 0 for rf in replication.values()):
        raise ValueError("replication factors must be >= 0")
    return dict(sorted(replication.items()))


def _token_table(nodes: Iterable[NodeInfo]) -> tuple[list[int], list[str]]:
    """Sorted tokens and the owner of each; a contested token goes to the smallest id."""
    pairs = sorted((t, info.node_id) for info in nodes for t in info.tokens)
    tokens: list[int] = []
    owners: list[str] = []
    for token, node_id in pairs:
        if tokens and tokens[-1] == token:
            continue  # pairs are sorted, so the smaller node id already holds it
        tokens.append(token)
        owners.append(node_id)
    return tokens, owners


def _dc_sizes(nodes: Iterable[NodeInfo], owners: list[str],
              replication: dict[str, int]) -> dict[str, tuple[int, int, int]]:
    """Per replicated dc: (rf, racks, nodes), counting only nodes that own a token."""
    on_ring = set(owners)
    racks: dict[str, set[str]] = {dc: set() for dc in replication}
    counts = dict.fromkeys(replication, 0)
    for info in nodes:
        if info.dc in racks and info.node_id in on_ring:
            racks[info.dc].add(info.rack)
            counts[info.dc] += 1
    return {dc: (rf, len(racks[dc]), counts[dc]) for dc, rf in replication.items()}


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge ranges that touch, including the last with the first across the wrap."""
    out: list[tuple[int, int]] = []
    for start, end in ranges:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    if len(out) > 1 and out[-1][1] == out[0][0]:
        out[0] = (out[-1][0], out[0][1])
        out.pop()
    return out


__all__ = ["TOKEN_SPACE", "MAX_TOKEN", "token_for", "storage_key", "user_key", "token_of",
           "generate_tokens", "NodeInfo", "Ring", "RangeMove", "moved_ranges", "range_width",
           "in_range", "scan_bounds"]
