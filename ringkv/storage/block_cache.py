"""LRU cache of checked SSTable data blocks, shared by every table of an engine.

The reader caches a block as its crc-verified (decompressed) body bytes plus a few ints
(see sstable_reader), and sizes it by real memory: the body's length plus measured object
overheads plus :data:`ENTRY_OVERHEAD`, this cache's own per-entry bookkeeping.
Keys are ints, ``(table_id << 32) + block_number``, so a lookup allocates nothing. The hit
path (``get`` + ``move_to_end``) takes no lock: both are single C calls under the GIL, and
a concurrent eviction only turns a hit into a miss. Inserts and evictions are locked.
Invariant: the summed size of cached blocks, as given to ``put``, stays <= capacity.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any


def _entry_overhead(n: int = 4096) -> int:
    """Bytes one cached block costs this cache beyond the block itself, measured once with
    sys.getsizeof: its OrderedDict slot and list node, its ``_sizes`` slot, the key int
    and the size int."""
    keys = [(1 << 40) + i for i in range(n)]
    od = OrderedDict.fromkeys(keys)
    sizes = dict.fromkeys(keys, 1 << 12)
    return -(-(sys.getsizeof(od) + sys.getsizeof(sizes)) // n) + 2 * sys.getsizeof(1 << 40)


ENTRY_OVERHEAD = _entry_overhead()


class BlockCache:
    """Checked blocks, evicted least recently used first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._blocks: OrderedDict[int, Any] = OrderedDict()
        self._sizes: dict[int, int] = {}
        self.size = 0
        self._lock = threading.Lock()
        self.get = self._blocks.get  # hit path, bound once
        self.touch = self._blocks.move_to_end

    def put(self, key: int, block: Any, size: int) -> None:
        """Insert a block of ``size`` bytes (the caller counts the block's real memory and
        :data:`ENTRY_OVERHEAD`), evicting old ones to make room."""
        if size > self.capacity:
            return
        with self._lock:
            if key in self._sizes:
                return
            self._blocks[key] = block
            self._sizes[key] = size
            self.size += size
            while self.size > self.capacity:
                old, _ = self._blocks.popitem(last=False)
                self.size -= self._sizes.pop(old)

    def __len__(self) -> int:
        return len(self._blocks)
