"""SSTable reader: point lookups and ordered iteration over one immutable file.

At open the footer, bloom filter, block index and metadata are read, checked and kept in
memory; data blocks are read on demand (one ``pread``), checked, decompressed if needed and
cached as raw bytes (a version-2 block is searched in place: ``find`` over its fixed-width
key array, or a bisection through its key offsets, then only the one entry is decoded).
Invariants: every block read verifies its crc (``Corruption`` otherwise) before it is
cached or used; lookups never touch a data block when the bloom filter says no (the engine
asks it first); the file is deleted only when the table is obsolete (replaced by
compaction) *and* no scan holds it.
"""

from __future__ import annotations

import struct
import sys
import threading
from bisect import bisect_left
from typing import Any, Iterator, Optional

import msgpack

from ringkv.errors import Corruption
from ringkv.storage import block_cache
from ringkv.storage import sstable_format as fmt
from ringkv.storage.block_cache import BlockCache
from ringkv.storage.bloom import BloomFilter

_unpack_entry = msgpack.unpackb
_u32_pair = struct.Struct("<II").unpack_from
# Real memory of a cached block beyond its body's bytes, measured once: the bytes object
# header, the 5-tuple holding it, two ints above the small-int cache (kbase, eoff_base),
# and the cache's own per-entry bookkeeping.
_BLOCK_OVERHEAD = (sys.getsizeof(b"") + sys.getsizeof((None,) * 5) + 2 * sys.getsizeof(1 << 20)
                   + block_cache.ENTRY_OVERHEAD)


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
        index, bloom, meta, flags, version = fmt.decode_footer(
            self.path, foff, self._file.pread(fmt.FOOTER.size, foff))
        for off, length in (index, bloom, meta):
            if off + length + fmt.TRAILER > foff:
                raise Corruption(self.path, foff, "footer points past the data")
        self.version = version
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
        if version == 1:
            self.get = self._get_v1  # type: ignore[method-assign]

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
        body, n, width, kbase, eoff_base = blk
        if width:  # fixed-width keys: one find() over the key array, no per-key objects
            if len(key) != width:
                return None
            pos = body.find(key, kbase, eoff_base)
            if pos < 0:
                return None
            j, rem = divmod(pos - kbase, width)
            if rem:  # matched across two keys: fall back to bisection
                j = self._bisect_fixed(body, n, width, kbase, key)
                if j < 0:
                    return None
        else:
            j = self._bisect_var(body, n, eoff_base + 4 * (n + 1), key)
            if j < 0:
                return None
        start, end = _u32_pair(body, eoff_base + 4 * j)
        try:
            return _unpack_entry(body[start:end], raw=False)
        except Exception as e:
            raise Corruption(self.path, self.offsets[i], f"undecodable entry: {e}") from None

    @staticmethod
    def _bisect_fixed(body: bytes, n: int, width: int, kbase: int, key: bytes) -> int:
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) >> 1
            p = kbase + mid * width
            if body[p:p + width] < key:
                lo = mid + 1
            else:
                hi = mid
        p = kbase + lo * width
        return lo if lo < n and body[p:p + width] == key else -1

    @staticmethod
    def _bisect_var(body: bytes, n: int, koff: int, key: bytes) -> int:
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) >> 1
            s, e = _u32_pair(body, koff + 4 * mid)
            if body[s:e] < key:
                lo = mid + 1
            else:
                hi = mid
        if lo == n:
            return -1
        s, e = _u32_pair(body, koff + 4 * lo)
        return lo if body[s:e] == key else -1

    def _get_v1(self, key: bytes) -> Optional[Any]:
        """get() for a version-1 table: the cached body is decoded per lookup."""
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
                pass
        keys, entries = fmt.decode_data_block(self.path, self.offsets[i], blk, 1)
        j = bisect_left(keys, key)
        if j < len(keys) and keys[j] == key:
            return entries[j]
        return None

    def _load(self, i: int, fill_cache: bool) -> tuple:
        """Read, check (and decompress) block i: -> the tuple the cache holds."""
        off, length = self.offsets[i], self.lengths[i]
        raw = self._pread(length + fmt.TRAILER, off)
        stats = self._stats
        stats.blocks_read += 1
        stats.bytes_read += len(raw)
        body = fmt.check_block(self.path, off, raw, length)
        if self.compressed:
            body = fmt.decompress_block(self.path, off, body)
        blk = (body,) if self.version == 1 else fmt.parse_data_block(self.path, off, body)
        if fill_cache:
            self._cache.put(self._cache_base + i, blk, len(body) + _BLOCK_OVERHEAD)
        return blk

    # -- iteration -----------------------------------------------------------------------
    def items(self, start: bytes = b"", end: Optional[bytes] = None) -> Iterator[tuple[bytes, Any]]:
        """(key, entry) in key order over [start, end); blocks bypass the cache."""
        for i in range(bisect_left(self.last_keys, start), self._nblocks):
            blk = self._cget(self._cache_base + i) or self._load(i, False)
            keys, entries = fmt.decode_data_block(self.path, self.offsets[i], blk, self.version)
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
        """Called when compaction replaced this table: drop the live list's reference and
        its blocks from the shared cache."""
        self.obsolete = True
        self._cache.discard_range(self._cache_base, self._nblocks)
        self.release()

    def close(self) -> None:
        """Close the file now (engine close); later reads raise Closed."""
        self._file.close()
        self._pread = self._file.pread
