"""The memtable: the newest writes, in memory, bounded by bytes.

A plain dict (key -> entry, see entry.py) is much cheaper per write in Python than a sorted
container; order is only needed at flush and scan time, when the keys are sorted once.
Invariants: while active, only the engine (under its lock) mutates it; once frozen
(switched out to be flushed) it never changes, so its sorted key list is computed once and
shared by the flusher and by scans. ``max_seq`` is the sequence number of the last write
applied, which tells which commit log records a flush of this memtable makes redundant.

Size accounting (``size``) follows real CPython memory, from constants measured once at
import with ``sys.getsizeof``: each bytes object costs its header plus up to 15 bytes of
allocator rounding (pymalloc hands out 16-byte multiples), and each key costs its share of
the dict's hash table averaged over a growth cycle. For a 16-byte key and a 100-byte value
that is ~254 B per entry (RSS measured 248-262 B), where ``len(key) + len(value)`` is 116.
"""

from __future__ import annotations

import heapq
import math
import sys
import time
from bisect import bisect_left
from typing import Iterator, Optional

from ringkv.storage.entry import Entry, MergeFn, combine

_ROUNDING = 15  # worst-case pymalloc rounding slack per object (16-byte size classes)
# sorted_keys sorts runs of this many keys, yielding the GIL after each, then merges them
# with heapq.merge. Why (docs/decisions.md D35): one sort of a full memtable (~100k keys) is
# one C call that holds the GIL for 40-90 ms, stalling the node's event loop; a run takes
# ~5 ms, and heapq.merge is Python code, which gives the GIL up to a waiting thread.
SORT_RUN_KEYS = 8192


def _dict_slot_bytes() -> int:
    """A dict's hash-table bytes per key, averaged over a growth cycle: a full table (2/3 of
    2**17 slots used, 4-byte indices, as in a memtable of megabytes) costs c per key; the
    table doubles when full, so over a cycle of n = U/2..U keys the mean is c * 2 ln 2."""
    n = (1 << 17) * 2 // 3
    full = sys.getsizeof(dict.fromkeys(range(n))) - sys.getsizeof({})
    return math.ceil(full / n * 2 * math.log(2))


BYTES_OVERHEAD = sys.getsizeof(b"") + _ROUNDING  # one bytes object beyond its length
FLOAT_COST = sys.getsizeof(1.0) + _ROUNDING  # a tombstone / expiry time
TUPLE_OVERHEAD = sys.getsizeof((None, None, None)) + _ROUNDING  # (value, expire_at, base)
#: real memory of one memtable entry beyond ``len(key) + len(value)``: key and value
#: bytes objects and the key's dict slot (~138 B on CPython 3.11, 64-bit)
ENTRY_OVERHEAD = 2 * BYTES_OVERHEAD + _dict_slot_bytes()


def entry_cost(key: bytes, entry: Entry) -> int:
    """Real memory (bytes) one memtable entry costs, for ``Memtable.size``."""
    cls = entry.__class__
    if cls is bytes:
        return len(key) + len(entry) + ENTRY_OVERHEAD  # type: ignore[arg-type]
    if cls is float:
        return len(key) + ENTRY_OVERHEAD - BYTES_OVERHEAD + FLOAT_COST
    return (len(key) + len(entry[0]) + ENTRY_OVERHEAD + TUPLE_OVERHEAD  # type: ignore[index]
            + FLOAT_COST)


class Memtable:
    """Key -> entry map with byte accounting."""

    __slots__ = ("data", "size", "max_seq", "_keys")

    def __init__(self) -> None:
        self.data: dict[bytes, Entry] = {}
        self.size = 0  # real bytes (entry_cost); grows on overwrite too (a safe over-estimate)
        self.max_seq = 0
        self._keys: Optional[list[bytes]] = None

    def apply(self, key: bytes, entry: Entry, merge: Optional[MergeFn]) -> None:
        """Apply a write: the new entry meets the old one through ``combine``."""
        data = self.data
        old = data.get(key)
        data[key] = entry if old is None else combine(old, entry, merge)
        self.size += entry_cost(key, entry)

    def __len__(self) -> int:
        return len(self.data)

    def sorted_keys(self) -> list[bytes]:
        """All keys in order. REQUIRES: frozen (no more writes)."""
        if self._keys is None:
            keys = list(self.data)
            if len(keys) > SORT_RUN_KEYS:
                runs = []
                for i in range(0, len(keys), SORT_RUN_KEYS):
                    run = keys[i:i + SORT_RUN_KEYS]
                    run.sort()
                    runs.append(run)
                    time.sleep(0)  # let a waiting event loop have the GIL
                keys = list(heapq.merge(*runs))  # a Python generator: gives the GIL up as it goes
            else:
                keys.sort()
            self._keys = keys
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
