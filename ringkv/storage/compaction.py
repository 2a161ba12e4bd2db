"""Compaction: choosing SSTables to merge (size-tiered) and merging them.

Size-tiered, as in Cassandra, with one restriction that keeps reads simple: a compaction
takes a *contiguous* run of the age-ordered table list, so the output can take the run's
place and "newer table wins" stays true without per-entry sequence numbers.

Invariants of the merge: a key's entries are folded newest to oldest through
``entry.combine`` (so LWW keeps the newest, merge mode joins operands); a tombstone or
expired value is dropped only when older than ``gc_grace`` *and* no table older than the
run may hold the key (checked with key range + bloom filter), otherwise it would uncover
older data; a merged value is dropped through ``purgeable`` under the same safety rule.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, Iterable, Iterator, Optional

from ringkv.storage.bloom import key_hash
from ringkv.storage.entry import MergeFn, PurgeFn, combine, deletion_time, is_final

SMALL_TABLE = 1 << 20  # tables below this size all count as this size when bucketing
MAX_RUN = 32  # never merge more tables than this at once


def pick_size_tiered(sizes: list[int], min_threshold: int, ratio: float) -> Optional[tuple[int, int]]:
    """Choose a run ``[i, j)`` of ``sizes`` (newest first) of similar sizes, or None.

    A table joins the run while its size is within ``ratio`` of the run's mean. Among the
    runs at least ``min_threshold`` long, the one with the smallest mean wins (cheapest).
    """
    best: Optional[tuple[float, int, int]] = None
    n = len(sizes)
    for i in range(n):
        total = max(sizes[i], SMALL_TABLE)
        j = i + 1
        while j < n and j - i < MAX_RUN:
            s = max(sizes[j], SMALL_TABLE)
            mean = total / (j - i)
            if not mean / ratio <= s <= mean * ratio:
                break
            total += s
            j += 1
        if j - i >= min_threshold:
            mean = total / (j - i)
            if best is None or mean < best[0]:
                best = (mean, i, j)
    return None if best is None else (best[1], best[2])


def merge_sources(sources: list[Iterable[tuple[bytes, Any]]], merge: Optional[MergeFn]) -> Iterator[tuple[bytes, Any]]:
    """Merge sorted (key, entry) streams given newest first; one folded entry per key."""
    tagged = [_tag(src, rank) for rank, src in enumerate(sources)]
    cur: Any = None
    acc: Any = None
    final = False
    for k, _rank, e in heapq.merge(*tagged):
        if k != cur:
            if cur is not None:
                yield cur, acc
            cur, acc, final = k, e, is_final(e, merge)
        elif not final:
            acc = combine(e, acc, merge)  # e is older than everything folded so far
            final = is_final(acc, merge)
    if cur is not None:
        yield cur, acc


def _tag(src: Iterable[tuple[bytes, Any]], rank: int) -> Iterator[tuple[bytes, int, Any]]:
    for k, e in src:
        yield k, rank, e


def older_may_hold(older: list[Any]) -> Callable[[bytes], bool]:
    """A check: may any table in ``older`` (SSTable readers) hold ``key``?"""
    def check(key: bytes) -> bool:
        h = key_hash(key)
        for t in older:
            if t.min_key <= key <= t.max_key and t.may_contain(h):
                return True
        return False
    return check


def purge(items: Iterable[tuple[bytes, Any]], *, now: float, gc_grace: float,
          merge: Optional[MergeFn], purgeable: Optional[PurgeFn],
          older_may_hold: Callable[[bytes], bool]) -> Iterator[tuple[bytes, Any]]:
    """Drop what compaction may safely forget; turn expired TTL values into tombstones."""
    for k, e in items:
        cls = e.__class__
        if cls is bytes:
            if purgeable is not None and purgeable(e, now) and not older_may_hold(k):
                continue
            yield k, e
            continue
        dt = deletion_time(e, now)
        if dt is not None:
            if now - dt >= gc_grace and not older_may_hold(k):
                continue
            yield k, float(dt)
            continue
        if merge is not None and purgeable is not None and purgeable(e[0], now) and not older_may_hold(k):
            continue
        yield k, e
