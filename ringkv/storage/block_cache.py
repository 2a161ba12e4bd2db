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

import os
import sys
import threading
from collections import OrderedDict
from typing import Any, Optional

AUTO = -1  # StorageConfig.block_cache_bytes: size the cache from the memory available
AUTO_SHARE = 8  # auto: 1/AUTO_SHARE of the memory available
AUTO_MIN, AUTO_MAX = 32 << 20, 1 << 30
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _entry_overhead(n: int = 4096) -> int:
    """Bytes one cached block costs this cache beyond the block itself, measured once with
    sys.getsizeof: its OrderedDict slot and list node, its ``_sizes`` slot, the key int
    and the size int."""
    keys = [(1 << 40) + i for i in range(n)]
    od = OrderedDict.fromkeys(keys)
    sizes = dict.fromkeys(keys, 1 << 12)
    return -(-(sys.getsizeof(od) + sys.getsizeof(sizes)) // n) + 2 * sys.getsizeof(1 << 40)


ENTRY_OVERHEAD = _entry_overhead()


def capacity_for(configured: int) -> int:
    """The cache capacity for ``StorageConfig.block_cache_bytes``: as configured, or for
    :data:`AUTO` 1/8 of the memory this process may use, clamped to [32 MiB, 1 GiB].

    Why a share of memory (docs/decisions.md D25): a miss costs a pread, a crc check and a
    parse of the block, so a server whose data would fit should not re-read it through a
    fixed small cache; the cap keeps several nodes on one host (``ringkv cluster up``)
    within a fraction of it, and the cache only grows as blocks are actually read."""
    if configured != AUTO:
        return configured
    available = _memory_available()
    if available is None:
        return 64 << 20  # the fixed default before auto sizing
    return max(AUTO_MIN, min(AUTO_MAX, available // AUTO_SHARE))


def _memory_available() -> Optional[int]:
    """Physical memory, or the cgroup's memory limit when that is smaller; None if unknown."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    for path in _CGROUP_LIMITS:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


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

    def discard_range(self, first: int, count: int) -> None:
        """Drop the cached blocks with keys ``first .. first + count - 1`` (the blocks of
        one table that compaction replaced: nothing reads them again, and left to the LRU
        they would fill the cache until they aged out, measured as about two thirds of a
        full cache while keys are loaded). A reader still on the old table may put one
        back; the LRU then ages it out as before."""
        with self._lock:
            blocks, sizes = self._blocks, self._sizes
            for key in range(first, first + count):
                size = sizes.pop(key, None)
                if size is not None:
                    del blocks[key]
                    self.size -= size

    def __len__(self) -> int:
        return len(self._blocks)
