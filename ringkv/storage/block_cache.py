"""LRU cache of decoded SSTable data blocks, shared by every table of an engine.

Keys are ints, ``(table_id << 32) + block_number``, so a lookup allocates nothing. The hit
path (``get`` + ``move_to_end``) takes no lock: both are single C calls under the GIL, and
a concurrent eviction only turns a hit into a miss. Inserts and evictions are locked.
Invariant: the summed estimated size of cached blocks stays <= capacity.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class BlockCache:
    """Decoded blocks, evicted least recently used first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._blocks: OrderedDict[int, Any] = OrderedDict()
        self._sizes: dict[int, int] = {}
        self.size = 0
        self._lock = threading.Lock()
        self.get = self._blocks.get  # hit path, bound once
        self.touch = self._blocks.move_to_end

    def put(self, key: int, block: Any, size: int) -> None:
        """Insert a block of estimated ``size`` bytes, evicting old ones to make room."""
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
