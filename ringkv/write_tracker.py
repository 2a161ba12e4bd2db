"""Which parts of the token space changed since a moment: the write side of cached Merkle trees.

The 64-bit token space is cut into ``2**SEGMENT_BITS`` fixed segments (a segment is the
top 20 bits of a token, ``token >> 44``; storage keys start with the big-endian token, so
it is the first 2.5 bytes of the storage key). :class:`WriteTracker` keeps, per segment,
the *epoch* of its last change, and a journal of the segments that changed, each at most
once per epoch, in order. :meth:`WriteTracker.mark` starts a new epoch and returns a
journal position; :meth:`WriteTracker.changed_since` gives every segment changed after
that mark. So finding what changed costs the number of changes, not the number of segments.

:class:`TrackedEngine` wraps the node's storage engine and calls ``touch`` after every
write it applies (``put``, ``aput``, ``aput_nowait``, ``delete``, ``adelete``): the one
place every write path of a node goes through (coordinator writes, replica writes, hints
delivered to their owner, read repair, repair, streaming). Reads pass straight through.

Invariants (what makes a refreshed tree exact, docs/repair.md "Cached trees"):

- ``touch`` runs after the engine applied the write (so after the write is visible to a
  scan that starts later), and even if waiting for durability fails;
- a tree's rescans take their engine snapshots after the ``mark`` that the tree records:
  a write applied before the snapshot is in the rescan; one whose ``touch`` came after
  the mark is in the journal after it, so the next refresh rescans its segment (a write
  can be both; rescanning a segment twice is harmless);
- ``touch`` and ``mark`` run on one thread (the node's event loop), so a stamp is never
  overwritten by an older epoch.

The journal is bounded (``max_journal`` entries of 4 bytes): past it the oldest half is
forgotten, and a tree marked before the forgotten part is rebuilt in full.
"""

from __future__ import annotations

import struct
from array import array
from typing import Any, Optional

SEGMENT_BITS = 20
SEGMENT_SHIFT = 64 - SEGMENT_BITS  # token >> SEGMENT_SHIFT = segment
SEGMENTS = 1 << SEGMENT_BITS
MAX_JOURNAL = 1 << 22  # 16 MiB of journal at most (4 segment changes per segment on average)
_EPOCH_LIMIT = (1 << 32) - 1  # stamps are u32
_u32 = struct.Struct(">I").unpack_from  # the fastest way to the top bits (~50 ns)
_U32_SHIFT = 32 - SEGMENT_BITS


def segment_of(skey: bytes) -> int:
    """The segment of a storage key (its token's top ``SEGMENT_BITS`` bits)."""
    return _u32(skey.ljust(4, b"\0"))[0] >> _U32_SHIFT


class WriteTracker:
    """Per-segment change epochs and a journal of changed segments (see the module doc)."""

    __slots__ = ("stamps", "epoch", "journal", "base", "max_journal", "forgotten")

    def __init__(self, max_journal: int = MAX_JOURNAL) -> None:
        self.stamps = array("I", bytes(4 * SEGMENTS))  # epoch of each segment's last change
        self.epoch = 1
        self.journal = array("I")  # changed segments; journal[i] is at position base + i
        self.base = 0
        self.max_journal = max(2, max_journal)
        self.forgotten = 0  # journal entries dropped over the bound

    def touch(self, skey: bytes) -> None:
        """Note a change of the entry ``skey`` (O(1); call after applying it)."""
        seg = segment_of(skey)
        if self.stamps[seg] != self.epoch:
            self.note(seg)

    def note(self, seg: int) -> None:
        """The slow half of :meth:`touch`: first change of ``seg`` in this epoch."""
        self.stamps[seg] = self.epoch
        journal = self.journal
        journal.append(seg)
        if len(journal) > self.max_journal:
            self.forget_before(self.base + len(journal) // 2)

    def mark(self) -> int:
        """Start a new epoch; the journal position from which later changes are listed."""
        pos = self.base + len(self.journal)
        self.epoch += 1
        if self.epoch >= _EPOCH_LIMIT:  # after 4G marks: restart the epochs (stamps 0 < 1)
            self.stamps = array("I", bytes(4 * SEGMENTS))
            self.epoch = 1
        return pos

    def position(self) -> int:
        """The journal's end (what ``mark`` would return, without starting an epoch)."""
        return self.base + len(self.journal)

    def changed_since(self, pos: int) -> Optional[list[int]]:
        """Sorted segments changed after ``mark()`` returned ``pos``; None if the journal no
        longer reaches back that far (the caller must rebuild in full)."""
        if pos < self.base:
            return None
        return sorted(set(self.journal[pos - self.base:]))

    def forget_before(self, pos: int) -> None:
        """Drop journal entries before position ``pos`` (no tree needs them)."""
        k = min(pos, self.base + len(self.journal)) - self.base
        if k > 0:
            del self.journal[:k]
            self.base += k
            self.forgotten += k


def _noting(aput_nowait: Any, tracker: WriteTracker) -> Any:
    """The engine's ``aput_nowait`` (applied now; a future for durability), then the
    segment noted: ``touch`` inlined with every name a local, since this runs on every
    replica and coordinator write. Its options are passed on by position: forwarding
    them as ``**kw`` built a dict per write, a cost out of proportion to the write."""
    def tracked_aput_nowait(key: bytes, value: bytes, base: bool = False, wait: bool = True,
                            _apply: Any = aput_nowait, _t: WriteTracker = tracker,
                            _u: Any = _u32) -> Any:
        fut = _apply(key, value, base, wait)
        seg = _u(key)[0] >> _U32_SHIFT  # storage keys are >= 9 bytes
        if _t.stamps[seg] != _t.epoch:
            _t.note(seg)
        return fut
    return tracked_aput_nowait


class TrackedEngine:
    """The node's engine, with every write noted in a :class:`WriteTracker`.

    Everything but the writes is the wrapped engine's own (attribute access falls
    through), so callers use it as the engine."""

    def __init__(self, engine: Any, tracker: WriteTracker) -> None:
        self.engine, self.tracker = engine, tracker
        self.get = engine.get  # the hot read paths skip __getattr__
        self.scan = engine.scan
        if hasattr(engine, "aput_nowait"):  # the put hot path: a closure, no method lookups
            self.aput_nowait = _noting(engine.aput_nowait, tracker)
            self.durable_nowait = engine.durable_nowait  # once per replica batch: no __getattr__

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    async def aput(self, key: bytes, value: bytes, **kw: Any) -> None:
        try:
            await self.engine.aput(key, value, **kw)
        finally:  # applied before its first await; noted even if durability failed
            self.tracker.touch(key)

    def put(self, key: bytes, value: bytes, **kw: Any) -> None:
        try:
            self.engine.put(key, value, **kw)
        finally:
            self.tracker.touch(key)

    def delete(self, key: bytes) -> None:
        try:
            self.engine.delete(key)
        finally:
            self.tracker.touch(key)

    async def adelete(self, key: bytes) -> None:
        try:
            await self.engine.adelete(key)
        finally:
            self.tracker.touch(key)


__all__ = ["SEGMENT_BITS", "SEGMENT_SHIFT", "SEGMENTS", "MAX_JOURNAL", "segment_of",
           "WriteTracker", "TrackedEngine"]
