"""Engine scans and the trees lent to repair sessions (the shell side of ``merkle_cache``).

- :func:`scan_range`, :func:`iter_ranges`, :func:`scan_ranges`: the engine's entries in
  token ranges (storage keys are token-prefixed, so a range is a contiguous scan;
  ``Engine.scan_ranges`` serves many small ranges from one snapshot);
- :func:`build_tree` (a full scan) and :func:`rescan_tree` (only some leaves);
- :class:`TreeStore`: a tree for a session, a kept one refreshed or a new one built, both
  off the event loop; the tracker's mark is taken on the loop first (see
  ringkv/write_tracker.py for why that makes a refreshed tree exact).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterator

from ringkv import merkle
from ringkv.merkle_cache import Checkout, TreeCache
from ringkv.ring import scan_bounds


def scan_range(engine: Any, start: int, end: int):
    """Every ``(skey, vs)`` the engine holds in the token range ``(start, end]``."""
    for lo, hi in scan_bounds(start, end):
        yield from engine.scan(lo, hi)


def build_tree(engine: Any, start: int, end: int, depth: int = merkle.DEFAULT_DEPTH) -> merkle.MerkleTree:
    """A tree of the engine's data in ``(start, end]`` (one scan; call off the loop)."""
    return merkle.build(start, end, scan_range(engine, start, end), depth)


def iter_ranges(engine: Any, ranges: list[tuple[int, int]]) -> Iterator[tuple[bytes, bytes]]:
    """Every ``(skey, vs)`` in the token ranges, in turn: one engine snapshot for all of
    them when the engine can (``Engine.scan_ranges``: the memtable is copied once, not per
    range, which matters for the thousands of small ranges of a rescan)."""
    many = getattr(engine, "scan_ranges", None)
    if many is None:
        return (item for s, e in ranges for item in scan_range(engine, s, e))
    return many([b for s, e in ranges for b in scan_bounds(s, e)])


def scan_ranges(engine: Any, ranges: list[tuple[int, int]]) -> list[tuple[bytes, bytes]]:
    return list(iter_ranges(engine, ranges))


def rescan_tree(engine: Any, tree: merkle.MerkleTree, buckets: list[int]) -> int:
    """Recompute ``tree``'s leaves ``buckets`` from the engine (call off the loop); the
    number of entries read."""
    ranges = merkle.bucket_ranges(tree.start, tree.end, tree.depth, buckets)
    return tree.rescan(buckets, iter_ranges(engine, ranges))


class TreeStore:
    """Trees for sessions: kept ones refreshed (``cache``), else built by a full scan.

    ``cache`` None: every checkout is a private full build (no write tracking needed)."""

    def __init__(self, engine_of: Callable[[], Any], cache: TreeCache | None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.engine_of, self.cache, self.monotonic = engine_of, cache, monotonic

    async def checkout(self, start: int, end: int, depth: int) -> Checkout:
        """A tree of the engine's data in ``(start, end]`` at ``depth``, lent until
        :meth:`checkin`. The tracker's mark is taken here, on the loop, before any scan."""
        engine, now = self.engine_of(), self.monotonic()
        if self.cache is None:
            co = Checkout((start, end, depth), 0, cached=False, reason="off")
        else:
            co = self.cache.checkout(start, end, depth, now)
        try:
            if co.buckets is None:
                tree = await off_loop(build_tree, engine, start, end, depth)
                n = tree.count
            else:
                assert co.tree is not None
                tree, n = co.tree, await off_loop(rescan_tree, engine, co.tree, co.buckets)
        except BaseException:
            self.checkin(co, ok=False)
            raise
        if self.cache is not None:
            self.cache.refreshed(co, tree, n, self.monotonic())
        co.tree = tree
        return co

    def checkin(self, co: Checkout, ok: bool = True) -> None:
        if self.cache is not None:
            self.cache.checkin(co, ok, self.monotonic())

    def view(self) -> dict:
        return self.cache.view() if self.cache is not None else {}


async def off_loop(fn: Callable, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def apply_items(engine: Any, items: list[tuple[bytes, bytes]]) -> None:
    """Write version sets (merge = join); concurrent so group commit shares the fsyncs."""
    await asyncio.gather(*(engine.aput(k, v) for k, v in items))


__all__ = ["scan_range", "build_tree", "iter_ranges", "scan_ranges", "rescan_tree", "TreeStore",
           "off_loop", "apply_items"]
