"""Merkle trees kept between repair sessions and refreshed from the write journal (pure).

Building a tree scans its whole range (about 1.5-3 us per key). A node that repairs the
same ranges again and again keeps each tree it built, keyed by ``(start, end, depth)``,
and on the next use *refreshes* it: the :class:`~ringkv.write_tracker.WriteTracker` lists
the token segments written since the tree was last brought up to date, only the leaves
overlapping those segments are rescanned (:func:`affected_buckets`, then
``MerkleTree.rescan`` in the shell), and every other leaf is reused. So a repair costs
what changed since the last one, not the size of the data (Riak's active anti-entropy
keeps its trees current the same way, from a per-key hash store; here the engine itself
is that store, since storage keys are token-ordered).

Rules (:class:`TreeCache`):

- a tree is used by one session at a time (*checked out*): the initiator's session
  updates its tree as it pulls keys, and a refresh rewrites leaves in place. A second
  session asking for a tree that is checked out gets a private full build, dropped after;
- a tree is rebuilt in full when it is older than ``max_age_s`` (this catches data that
  changed without a write: tombstones purged by compaction after their grace period, TTL
  expiry), when the journal no longer reaches back to its mark, or when the changed
  segments cover more than half of its leaves (a full scan is then as cheap);
- a refresh or build that failed drops the tree (it may be half updated);
- memory is bounded by ``max_trees`` and ``max_bytes`` (``MerkleTree.memory_bytes``):
  least recently used trees not checked out are dropped first; a tree larger than
  ``max_bytes`` on its own is not kept. ``max_bytes = 0`` turns the cache off.

The shell (``ringkv.repair.TreeStore``) calls :meth:`TreeCache.checkout` on the event loop
(it takes the tracker's mark at that moment), builds or rescans off the loop, then
:meth:`TreeCache.refreshed` and, when the session is over, :meth:`TreeCache.checkin`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ringkv.merkle import MASK, MerkleTree
from ringkv.write_tracker import SEGMENT_SHIFT, WriteTracker

Key = tuple[int, int, int]  # (start, end, depth)


@dataclass
class Entry:
    """One kept tree."""

    tree: Optional[MerkleTree]  # None while its first build runs
    pos: int  # the tracker mark the tree reflects: changes journaled after it may be missing
    built: float  # when it was last built in full
    used: float  # last checkout (LRU)
    busy: bool = True


@dataclass
class Checkout:
    """A tree lent to one session. ``buckets`` None: build in full; else rescan those."""

    key: Key
    pos: int
    tree: Optional[MerkleTree] = None
    buckets: Optional[list[int]] = None
    cached: bool = True  # False: a private tree (the kept one was busy, or no cache)
    reason: str = "new"  # new | refresh | aged | journal | changes | busy | off
    keys_rescanned: int = 0
    returned: bool = False  # checked in (a second checkin is ignored)


@dataclass
class CacheStats:
    full_builds: int = 0
    refreshes: int = 0
    busy_builds: int = 0  # private full builds: the kept tree was in use by another session
    leaves_rescanned: int = 0
    keys_rescanned: int = 0
    segments_changed: int = 0
    evictions: int = 0
    failures: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class TreeCache:
    """Kept trees by ``(start, end, depth)``; see the module doc for the rules."""

    def __init__(self, tracker: WriteTracker, max_trees: int, max_bytes: int,
                 max_age_s: float) -> None:
        self.tracker = tracker
        self.max_trees, self.max_bytes, self.max_age_s = max_trees, max_bytes, max_age_s
        self.entries: dict[Key, Entry] = {}
        self.stats = CacheStats()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 and self.max_trees > 0

    def checkout(self, start: int, end: int, depth: int, now: float) -> Checkout:
        """Lend the tree of ``(start, end]`` at ``depth``: say whether to rescan some
        buckets of a kept tree or build one. Call on the thread that writes (the loop)."""
        key = (start & MASK, end & MASK, depth)
        pos = self.tracker.mark()
        entry = self.entries.get(key)
        if not self.enabled:
            return self._full(Checkout(key, pos, cached=False, reason="off"))
        if entry is not None and entry.busy:
            self.stats.busy_builds += 1
            return self._full(Checkout(key, pos, cached=False, reason="busy"))
        if entry is None or entry.tree is None:
            self.entries[key] = Entry(None, pos, now, now)
            return self._full(Checkout(key, pos, reason="new"))
        entry.busy, entry.used = True, now
        changed = self.tracker.changed_since(entry.pos)
        reason = ("aged" if now - entry.built > self.max_age_s
                  else "journal" if changed is None else "")
        if not reason:
            assert changed is not None
            buckets = affected_buckets(entry.tree, changed)
            if buckets is None:
                reason = "changes"
            else:
                self.stats.segments_changed += len(changed)
                entry.pos = pos
                return Checkout(key, pos, entry.tree, buckets, reason="refresh")
        entry.tree, entry.pos = None, pos
        return self._full(Checkout(key, pos, reason=reason))

    def _full(self, co: Checkout) -> Checkout:
        self.stats.by_reason[co.reason] = self.stats.by_reason.get(co.reason, 0) + 1
        return co

    def refreshed(self, co: Checkout, tree: MerkleTree, keys_scanned: int, now: float) -> None:
        """The shell built (``co.buckets`` None) or rescanned ``tree`` for ``co``."""
        co.tree, co.keys_rescanned = tree, keys_scanned
        s = self.stats
        if co.buckets is None:
            s.full_builds += 1
            entry = self.entries.get(co.key) if co.cached else None
            if entry is not None:
                entry.tree, entry.built = tree, now
        else:
            s.refreshes += 1
            s.leaves_rescanned += len(co.buckets)
            s.keys_rescanned += keys_scanned
            s.by_reason["refresh"] = s.by_reason.get("refresh", 0) + 1

    def checkin(self, co: Checkout, ok: bool, now: float) -> None:
        """The session is over. ``ok`` False: the tree may be half updated; drop it."""
        if co.returned:
            return
        co.returned = True
        entry = self.entries.get(co.key) if co.cached else None
        if entry is not None:
            if ok and entry.tree is not None:
                entry.busy, entry.used = False, now
            else:
                self.stats.failures += not ok
                del self.entries[co.key]
        self._bound()
        self.tracker.forget_before(min((e.pos for e in self.entries.values()),
                                       default=self.tracker.position()))

    def _bound(self) -> None:
        idle = sorted((e.used, k) for k, e in self.entries.items() if not e.busy)
        total = sum(e.tree.memory_bytes() for e in self.entries.values() if e.tree is not None)
        for _, k in idle:
            if len(self.entries) <= self.max_trees and total <= self.max_bytes:
                break
            tree = self.entries.pop(k).tree
            total -= tree.memory_bytes() if tree is not None else 0
            self.stats.evictions += 1

    def view(self) -> dict:
        """Counters and gauges for ``repair_status``."""
        s = self.stats
        return {"trees": len(self.entries),
                "bytes": sum(e.tree.memory_bytes() for e in self.entries.values()
                             if e.tree is not None),
                "full_builds": s.full_builds, "refreshes": s.refreshes,
                "busy_builds": s.busy_builds, "leaves_rescanned": s.leaves_rescanned,
                "keys_rescanned": s.keys_rescanned, "segments_changed": s.segments_changed,
                "evictions": s.evictions, "failures": s.failures,
                "builds_by_reason": dict(s.by_reason), "journal": len(self.tracker.journal)}


def affected_buckets(tree: MerkleTree, segments: list[int]) -> Optional[list[int]]:
    """The leaf buckets of ``tree`` that overlap any of the token ``segments``, sorted;
    None when they are more than half of its leaves (rebuilding is then as cheap)."""
    half = 1 << tree.depth >> 1
    first, width, shift, depth = (tree.start + 1) & MASK, tree.width, tree._shift, tree.depth
    seg_len = 1 << SEGMENT_SHIFT
    out: set[int] = set()
    for seg in segments:
        lo = ((seg << SEGMENT_SHIFT) - first) & MASK  # the segment's first offset in the range
        pieces = [(lo, lo + seg_len - 1)] if lo + seg_len - 1 <= MASK else \
            [(lo, MASK), (0, lo + seg_len - 1 - (MASK + 1))]  # it contains the range's start
        for a, b in pieces:
            b = min(b, width - 1)
            if a > b:
                continue
            if shift >= 0:
                ba, bb = a >> shift, b >> shift
            else:
                ba, bb = (a << depth) // width, (b << depth) // width
            if bb - ba >= half:
                return None
            out.update(range(ba, bb + 1))
        if len(out) > half:
            return None
    return sorted(out)


__all__ = ["TreeCache", "Checkout", "Entry", "CacheStats", "affected_buckets"]
