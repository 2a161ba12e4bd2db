"""The memtable: the newest writes, in memory, bounded by bytes.

A plain dict (key -> entry, see entry.py) is much cheaper per write in Python than a sorted
container; order is only needed at flush and scan time, when the keys are sorted once.
Invariants: while active, only the engine (under its lock) mutates it; once frozen
(switched out to be flushed) it never changes, so its sorted key list is computed once and
shared by the flusher and by scans. ``max_seq`` is the sequence number of the last write
applied, which tells which commit log records a flush of this memtable makes redundant.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterator, Optional

from ringkv.storage.entry import Entry, MergeFn, combine, entry_size


class Memtable:
    """Key -> entry map with byte accounting."""

    __slots__ = ("data", "size", "max_seq", "_keys")

    def __init__(self) -> None:
        self.data: dict[bytes, Entry] = {}
        self.size = 0  # approximate bytes; grows on overwrite too (a safe over-estimate)
        self.max_seq = 0
        self._keys: Optional[list[bytes]] = None

    def apply(self, key: bytes, entry: Entry, merge: Optional[MergeFn]) -> None:
        """Apply a write: the new entry meets the old one through ``combine``."""
        data = self.data
        old = data.get(key)
        data[key] = entry if old is None else combine(old, entry, merge)
        self.size += entry_size(key, entry)

    def __len__(self) -> int:
        return len(self.data)

    def sorted_keys(self) -> list[bytes]:
        """All keys in order. REQUIRES: frozen (no more writes)."""
        if self._keys is None:
            self._keys = sorted(self.data)
        return self._keys

    def items(self, start: bytes = b"", end: Optional[bytes] = None) -> Iterator[tuple[bytes, Entry]]:
        """(key, entry) in key order over [start, end). REQUIRES: frozen."""
        keys = self.sorted_keys()
        data = self.data
        for i in range(bisect_left(keys, start), len(keys)):
            k = keys[i]
            if end is not None and k >= end:
                return
            yield k, data[k]


def snapshot_items(data: dict[bytes, Entry], start: bytes, end: Optional[bytes]) -> list[tuple[bytes, Entry]]:
    """Sorted copy of an active memtable's [start, end) range. REQUIRES: engine lock held."""
    if end is None:
        items = [(k, v) for k, v in data.items() if k >= start]
    else:
        items = [(k, v) for k, v in data.items() if start <= k < end]
    items.sort(key=_first)
    return items


def _first(item: tuple[bytes, Entry]) -> bytes:
    return item[0]
