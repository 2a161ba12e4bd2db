"""SSTable reader: point lookups and ordered iteration over one immutable file.

At open the footer, bloom filter, block index and metadata are read, checked and kept in
memory; data blocks are read on demand (one ``pread``), checked, decoded and cached.
Invariants: every block read verifies its crc (``Corruption`` otherwise); lookups never
touch a data block when the bloom filter says no (the engine asks it first); the file is
deleted only when the table is obsolete (replaced by compaction) *and* no scan holds it.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any, Iterator, Optional

import msgpack

from ringkv.errors import Corruption
from ringkv.storage import sstable_format as fmt
from ringkv.storage.block_cache import BlockCache
from ringkv.storage.bloom import BloomFilter


class TableStats:
    """Counters shared by the tables of one engine (approximate under threads)."""

    __slots__ = ("blocks_read", "block_cache_hits", "bytes_read")

    def __init__(self) -> None:
        self.blocks_read = self.block_cache_hits = self.bytes_read = 0


class SSTableReader:
    """An open SSTable. ``may_contain(hash)`` is its bloom filter check."""

    def __init__(self, fs: Any, path: str, table_id: int, cache: BlockCache,
                 stats: TableStats) -> None:
        self.path, self.table_id = path, table_id
        self._fs = fs
        self._file = fs.open_read(path)
        try:
            self._load_footer_parts()
        except Corruption:
            self._file.close()
            raise
        except Exception as e:
            self._file.close()
            raise Corruption(path, 0, f"unreadable SSTable metadata: {e}") from None
        self._pread = self._file.pread
        self._cache = cache
        self._cget, self._ctouch = cache.get, cache.touch
        self._stats = stats
        self._cache_base = table_id << 32
        self._nblocks = len(self.last_keys)
        self.refs = 1  # the engine's live table list holds one reference
        self.obsolete = False
        self._ref_lock = threading.Lock()

    def _load_footer_parts(self) -> None:
        size = self._file.size
        foff = size - fmt.FOOTER.size
        if foff < 0:
            raise Corruption(self.path, 0, "file too short for an SSTable footer")
        index, bloom, meta, flags = fmt.decode_footer(self.path, foff, self._file.pread(fmt.FOOTER.size, foff))
        for off, length in (index, bloom, meta):
            if off + length + fmt.TRAILER > foff:
                raise Corruption(self.path, foff, "footer points past the data")
        self.compressed = bool(flags & fmt.FLAG_ZLIB)
        self.bloom = BloomFilter.decode(self._read_framed(*bloom))
        self.may_contain = self.bloom.may_contain
        self.last_keys, self.offsets, self.lengths = msgpack.unpackb(self._read_framed(*index))
        self.meta = msgpack.unpackb(self._read_framed(*meta))
        self.meta["file_bytes"] = size
        self.file_bytes = size
        self.min_key = self.meta["min_key"]
        self.max_key = self.meta["max_key"]
        self.entries = self.meta["entries"]
        self.max_seq = self.meta["max_seq"]
        if len(self.offsets) != len(self.last_keys) or len(self.lengths) != len(self.last_keys):
            raise Corruption(self.path, index[0], "index arrays disagree")

    def _read_framed(self, off: int, length: int) -> bytes:
        return fmt.check_block(self.path, off, self._file.pread(length + fmt.TRAILER, off), length)

    # -- point lookups -----------------------------------------------------------------
    def get(self, key: bytes) -> Optional[Any]:
        """The entry stored for ``key``, or None. Call only after ``may_contain``."""
        i = bisect_left(self.last_keys, key)
        if i == self._nblocks:
            return None
        ck = self._cache_base + i
        blk = self._cget(ck)
        if blk is None:
            blk = self._load(i, True)
        else:
            self._stats.block_cache_hits += 1
            try:
                self._ctouch(ck)
            except KeyError:
                pass  # evicted meanwhile
        keys = blk[0]
        j = bisect_left(keys, key)
        if j < len(keys) and keys[j] == key:
            return blk[1][j]
        return None

    def _load(self, i: int, fill_cache: bool) -> tuple[list, list]:
        off, length = self.offsets[i], self.lengths[i]
        raw = self._pread(length + fmt.TRAILER, off)
        stats = self._stats
        stats.blocks_read += 1
        stats.bytes_read += len(raw)
        body = fmt.check_block(self.path, off, raw, length)
        blk = fmt.decode_data_block(self.path, off, body, self.compressed)
        if fill_cache:
            self._cache.put(self._cache_base + i, blk, length + 96 * len(blk[0]))
        return blk

    # -- iteration -----------------------------------------------------------------------
    def items(self, start: bytes = b"", end: Optional[bytes] = None) -> Iterator[tuple[bytes, Any]]:
        """(key, entry) in key order over [start, end); blocks bypass the cache."""
        for i in range(bisect_left(self.last_keys, start), self._nblocks):
            blk = self._cget(self._cache_base + i) or self._load(i, False)
            keys, entries = blk
            j = bisect_left(keys, start) if start else 0
            for n in range(j, len(keys)):
                k = keys[n]
                if end is not None and k >= end:
                    return
                yield k, entries[n]

    # -- lifetime ------------------------------------------------------------------------
    def acquire(self) -> None:
        with self._ref_lock:
            self.refs += 1

    def release(self) -> None:
        """Drop a reference; the file goes once the table is obsolete and unreferenced."""
        with self._ref_lock:
            self.refs -= 1
            gone = self.refs == 0 and self.obsolete
        if gone:
            self._fs.remove(self.path)

    def mark_obsolete(self) -> None:
        """Called when compaction replaced this table: drop the live list's reference."""
        self.obsolete = True
        self.release()

    def close(self) -> None:
        """Close the file now (engine close); later reads raise Closed."""
        self._file.close()
        self._pread = self._file.pread
