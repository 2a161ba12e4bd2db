"""Merkle trees over a token range, for anti-entropy (pure).

A tree covers one token range ``(start, end]`` (it may wrap through 0) cut into
``2**depth`` buckets of equal token width: bucket ``b`` holds the keys whose offset
``o = token - start - 1 (mod 2**64)`` satisfies ``b <= o * 2**depth / width < b + 1``. A
bucket is therefore one contiguous token range, i.e. one contiguous engine scan
(:func:`bucket_ranges`), and two replicas given the same ``(start, end, depth)`` cut the
key space identically.

Hashes are additive (Riak's ``hashtree`` hashes children; we sum them):

- every stored entry has ``entry_hash(skey, vs) = xxh3_64(len(skey) | skey | vs)``;
- a leaf is the sum mod 2**64 of its entries' hashes, an internal node the sum of its two
  children, so every node is the multiset hash of the entries below it.

Why a sum: the tree is built in one streaming pass in any order, updated in O(depth) per
changed entry (:meth:`MerkleTree.replace`: subtract the old entry hash, add the new), and
a deep tree folds into any shallower one (``level(d)``) so the depth used for comparison
can be chosen after both sides counted their keys. Two different entry multisets collide
with probability about 2**-64 per node for non-adversarial data; entry hashes cover the
version-set bytes, which include dots and timestamps minted by the nodes.

Leaves are sparse (a dict of non-zero buckets), so an empty or small range costs nothing
at any depth. Levels above the leaves are folded on demand and cached; ``replace`` keeps
cached levels current. Each tree also counts its entries per leaf (``counts``), so a
leaf can be recomputed from a rescan of its token range alone (:meth:`MerkleTree.rescan`:
how ``ringkv.merkle_cache`` refreshes a kept tree instead of rebuilding it).

Serialisation: hashes travel as packed big-endian u64 (``pack_hashes``), node indices as
packed u32 (``pack_indices``): 8 and 4 bytes each, no per-item msgpack overhead.
"""

from __future__ import annotations

import struct
from typing import Iterable, Iterator

import xxhash

MASK = (1 << 64) - 1
TOKEN_SPACE = 1 << 64
MAX_DEPTH = 24  # 16M buckets; indices fit in u32
DEFAULT_DEPTH = 20  # 1M buckets: about one key per bucket for a 1M-key range
NODE_BYTES = 100  # measured (tracemalloc, CPython 3.11): one node = dict slot + key int + hash int
COUNT_BYTES = 33  # one per-leaf count (dict slot; the key int is shared with the leaf)

_xxh3 = xxhash.xxh3_64_intdigest


def entry_hash(skey: bytes, vs: bytes) -> int:
    """The hash of one stored entry: storage key (length-prefixed) and version-set bytes.

    Version sets encode canonically (``versions.encode``), so equal sets hash equally."""
    return _xxh3(len(skey).to_bytes(2, "big") + skey + vs)


def width_of(start: int, end: int) -> int:
    """Tokens in ``(start, end]``; ``start == end`` is the whole token space."""
    return (end - start - 1) % TOKEN_SPACE + 1


class MerkleTree:
    """An additive Merkle tree of one token range at a fixed leaf depth."""

    __slots__ = ("start", "end", "depth", "width", "count", "total", "leaves", "counts", "_levels",
                 "_shift")

    def __init__(self, start: int, end: int, depth: int = DEFAULT_DEPTH) -> None:
        if not 0 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth must be in 0..{MAX_DEPTH}")
        self.start, self.end, self.depth = start & MASK, end & MASK, depth
        self.width = width_of(self.start, self.end)
        self.count = 0  # entries added minus entries removed
        self.total = 0  # the root hash, kept as entries come and go (no folding needed)
        self.leaves: dict[int, int] = {}
        self.counts: dict[int, int] = {}  # entries per leaf (non-zero only); sums to ``count``
        self._levels: dict[int, dict[int, int]] = {}
        # whole ring: bucket = offset >> shift (no big-int division on the hot path)
        self._shift = 64 - depth if self.width == TOKEN_SPACE else -1

    # -- building -----------------------------------------------------------------------

    def bucket(self, token: int) -> int:
        """The leaf bucket of ``token`` (which must lie in the range)."""
        offset = (token - self.start - 1) & MASK
        if self._shift >= 0:
            return offset >> self._shift
        return (offset << self.depth) // self.width

    def add(self, token: int, h: int) -> None:
        """Add one entry hash (streaming build)."""
        b = self.bucket(token)
        self._delta(b, h)
        self.count += 1
        counts = self.counts
        counts[b] = counts.get(b, 0) + 1

    def add_entry(self, skey: bytes, vs: bytes) -> None:
        """Add the stored entry ``skey -> vs``."""
        self.add(int.from_bytes(skey[:8], "big"), entry_hash(skey, vs))

    def replace(self, token: int, old: int | None, new: int | None) -> None:
        """Incremental update: an entry's hash went from ``old`` to ``new`` (None = absent)."""
        delta = (new or 0) - (old or 0)
        dc = (new is not None) - (old is not None)
        if delta or dc:
            b = self.bucket(token)
            if delta:
                self._delta(b, delta)
            if dc:
                self.count += dc
                self._count(b, self.counts.get(b, 0) + dc)

    def rescan(self, buckets: Iterable[int], entries: Iterable[tuple[bytes, bytes]]) -> int:
        """Recompute the leaves ``buckets`` from ``entries``: every ``(skey, vs)`` now stored
        in those buckets' token ranges (and nothing else). Every other leaf is kept; cached
        levels, the root and the count follow. Returns the number of entries read."""
        hashes, counts, n = accumulate(self, entries)
        for b in set(buckets):
            delta = (hashes.get(b, 0) - self.leaves.get(b, 0)) & MASK
            if delta:
                self._delta(b, delta)
            c = counts.get(b, 0)
            self.count += c - self.counts.get(b, 0)
            self._count(b, c)
        return n

    def _count(self, b: int, c: int) -> None:
        if c:
            self.counts[b] = c
        else:
            self.counts.pop(b, None)

    def _delta(self, b: int, delta: int) -> None:
        self.total = (self.total + delta) & MASK
        h = (self.leaves.get(b, 0) + delta) & MASK
        if h:
            self.leaves[b] = h
        else:
            self.leaves.pop(b, None)
        for d, level in self._levels.items():
            i = b >> (self.depth - d)
            v = (level.get(i, 0) + delta) & MASK
            if v:
                level[i] = v
            else:
                level.pop(i, None)

    # -- reading ------------------------------------------------------------------------

    def level(self, d: int) -> dict[int, int]:
        """Sparse node hashes at depth ``d`` (0 = root, ``self.depth`` = leaves)."""
        if d == self.depth:
            return self.leaves
        if not 0 <= d < self.depth:
            raise ValueError(f"level {d} outside 0..{self.depth}")
        level = self._levels.get(d)
        if level is None:  # fold up one level at a time from the nearest known one, caching each
            below = d + 1
            while below < self.depth and below not in self._levels:
                below += 1
            src = self.leaves if below == self.depth else self._levels[below]
            for k in range(below - 1, d - 1, -1):
                src = self._levels[k] = fold(src, 1)
            level = src
        return level

    def memory_bytes(self) -> int:
        """An estimate of the memory the tree holds: ``NODE_BYTES`` per non-zero node
        (leaves and cached levels) and ``COUNT_BYTES`` per leaf count."""
        nodes = len(self.leaves) + sum(len(level) for level in self._levels.values())
        return nodes * NODE_BYTES + len(self.counts) * COUNT_BYTES

    def node(self, d: int, i: int) -> int:
        return self.level(d).get(i, 0)

    def root(self) -> int:
        return self.total

    def children(self, d: int, parents: Iterable[int], step: int) -> list[int]:
        """Dense hashes of the ``2**step`` descendants at depth ``d + step`` of each parent
        (at depth ``d``), parent by parent, in index order."""
        below = self.level(d + step)
        n = 1 << step
        out: list[int] = []
        for p in parents:
            base = p << step
            out += [below.get(base + k, 0) for k in range(n)]
        return out


def fold(nodes: dict[int, int], shift: int) -> dict[int, int]:
    """Sum sparse nodes into their ancestors ``shift`` levels up."""
    out: dict[int, int] = {}
    for i, h in nodes.items():
        j = i >> shift
        out[j] = (out.get(j, 0) + h) & MASK
    return {i: h for i, h in out.items() if h}


def build(start: int, end: int, entries: Iterable[tuple[bytes, bytes]],
          depth: int = DEFAULT_DEPTH) -> MerkleTree:
    """A tree of ``(skey, vs)`` entries (any order) in one streaming pass."""
    tree = MerkleTree(start, end, depth)
    hashes, counts, n = accumulate(tree, entries)
    tree.leaves = {b: h for b, h in hashes.items() if h}
    tree.counts = counts
    tree.count = n
    tree.total = sum(tree.leaves.values()) & MASK
    return tree


def accumulate(tree: MerkleTree, entries: Iterable[tuple[bytes, bytes]]
               ) -> tuple[dict[int, int], dict[int, int], int]:
    """Per-bucket hash sums (masked) and entry counts of ``entries`` in ``tree``'s buckets."""
    hashes: dict[int, int] = {}
    counts: dict[int, int] = {}
    first, shift, depth, width = tree.start + 1, tree._shift, tree.depth, tree.width
    n = 0
    for skey, vs in entries:
        offset = (int.from_bytes(skey[:8], "big") - first) & MASK
        b = offset >> shift if shift >= 0 else (offset << depth) // width
        hashes[b] = hashes.get(b, 0) + _xxh3(len(skey).to_bytes(2, "big") + skey + vs)
        counts[b] = counts.get(b, 0) + 1
        n += 1
    return {b: h & MASK for b, h in hashes.items()}, counts, n


def diff(a: MerkleTree, b: MerkleTree, depth: int | None = None) -> list[int]:
    """Bucket indices at ``depth`` (default: the shallower leaf depth) where ``a`` and ``b``
    differ, found by descending from the root through differing nodes only."""
    if (a.start, a.end) != (b.start, b.end):
        raise ValueError("trees cover different ranges")
    d = min(a.depth, b.depth) if depth is None else depth
    frontier = [0] if a.root() != b.root() else []
    for level in range(1, d + 1):
        la, lb = a.level(level), b.level(level)
        frontier = [c for p in frontier for c in (2 * p, 2 * p + 1) if la.get(c, 0) != lb.get(c, 0)]
    return frontier


def bucket_offsets(width: int, depth: int, b: int) -> tuple[int, int]:
    """Offsets ``[lo, hi)`` (from ``start + 1``) covered by bucket ``b``."""
    n = 1 << depth
    return -(-b * width // n), -(-(b + 1) * width // n)


def bucket_ranges(start: int, end: int, depth: int, buckets: Iterable[int]) -> list[tuple[int, int]]:
    """Token ranges ``(s, e]`` covering ``buckets`` (sorted), adjacent ones merged; empty
    buckets (narrower than one token) are skipped."""
    width = width_of(start, end)
    spans: list[list[int]] = []
    for b in sorted(set(buckets)):
        lo, hi = bucket_offsets(width, depth, b)
        if lo == hi:
            continue
        if spans and spans[-1][1] == lo:
            spans[-1][1] = hi
        else:
            spans.append([lo, hi])
    return [((start + lo) & MASK, (start + hi) & MASK) for lo, hi in spans]


def compare_depth(count: int, keys_per_leaf: float, max_depth: int) -> int:
    """The shallowest depth whose buckets hold at most ``keys_per_leaf`` keys on average."""
    d = 0
    while d < max_depth and count > keys_per_leaf * (1 << d):
        d += 1
    return d


def chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def pack_hashes(hashes: list[int]) -> bytes:
    return struct.pack(f">{len(hashes)}Q", *hashes)


def unpack_hashes(data: bytes) -> list[int]:
    if len(data) % 8:
        raise ValueError("packed hashes: length not a multiple of 8")
    return list(struct.unpack(f">{len(data) // 8}Q", data))


def pack_indices(indices: list[int]) -> bytes:
    return struct.pack(f">{len(indices)}I", *indices)


def unpack_indices(data: bytes) -> list[int]:
    if len(data) % 4:
        raise ValueError("packed indices: length not a multiple of 4")
    return list(struct.unpack(f">{len(data) // 4}I", data))


__all__ = ["MASK", "MAX_DEPTH", "DEFAULT_DEPTH", "NODE_BYTES", "COUNT_BYTES", "entry_hash", "width_of",
           "MerkleTree", "fold", "build", "accumulate", "diff", "bucket_offsets", "bucket_ranges", "compare_depth",
           "chunks", "pack_hashes", "unpack_hashes", "pack_indices", "unpack_indices"]
