"""SSTable writer: turns a sorted stream of (key, entry) into one immutable file.

Invariants: keys arrive strictly ascending (checked); the file is fsync'd before
``finish`` returns, so a manifest may name it from then on. A writer that fails or is
abandoned leaves only a file the manifest does not name, which open() deletes as an orphan.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate
from typing import Any, Iterable

import msgpack

from ringkv.errors import InvalidRequest
from ringkv.storage import sstable_format as fmt
from ringkv.storage.bloom import BloomFilter, key_hash

_BUFFER = 1 << 20  # bytes buffered before a write() to the file


def _other_size(entry: Any) -> int:
    """Estimated encoded size of a non-bytes entry (tombstone or list)."""
    return 24 + (len(entry[0]) if entry.__class__ is not float else 0)


class SSTableWriter:
    """Builds one SSTable at ``path``."""

    def __init__(self, fs: Any, path: str, *, block_bytes: int, compress: bool,
                 bloom_fp_rate: float, expected_keys: int) -> None:
        self.path = path
        self._fs = fs
        self._file = fs.open_write(path)
        self._block_bytes = block_bytes
        self._compress = compress
        self._bloom = BloomFilter.for_capacity(expected_keys, bloom_fp_rate)
        self._buf = bytearray()
        self._offset = 0
        self._keys: list[bytes] = []
        self._entries: list[Any] = []
        self._block_size = 0
        self._last_keys: list[bytes] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self.entries = 0
        self.tombstones = 0
        self.min_key: bytes | None = None
        self.max_key: bytes | None = None

    def add(self, key: bytes, entry: Any) -> None:
        """Append one entry. REQUIRES: key greater than every key added before."""
        if self.max_key is not None and key <= self.max_key:
            raise InvalidRequest("SSTable keys must be added in ascending order")
        if self.min_key is None:
            self.min_key = key
        self.max_key = key
        self._keys.append(key)
        self._entries.append(entry)
        self._bloom.add(key_hash(key))
        self.entries += 1
        if entry.__class__ is bytes:
            self._block_size += len(key) + len(entry) + 8
        else:
            if entry.__class__ is float:
                self.tombstones += 1
            self._block_size += len(key) + _other_size(entry)
        if self._block_size >= self._block_bytes:
            self._end_block()

    def add_all(self, items: Iterable[tuple[bytes, Any]]) -> None:
        for key, entry in items:
            self.add(key, entry)

    def add_sorted(self, keys: list[bytes], entries: list[Any]) -> None:
        """Bulk add (the flush path): the same result as ``add`` per entry, cheaper.
        REQUIRES: ``keys`` strictly ascending, all above any key added before."""
        if not keys:
            return
        if self.max_key is not None and keys[0] <= self.max_key:
            raise InvalidRequest("SSTable keys must be added in ascending order")
        self._end_block()
        self._bloom.add_keys(keys)
        self.entries += len(keys)
        self.tombstones += sum(1 for e in entries if e.__class__ is float)
        if self.min_key is None:
            self.min_key = keys[0]
        self.max_key = keys[-1]
        sizes = [len(k) + (len(e) + 8 if e.__class__ is bytes else _other_size(e))
                 for k, e in zip(keys, entries)]
        ends = list(accumulate(sizes))
        start, n, block = 0, len(keys), self._block_bytes
        while start < n:
            base = ends[start - 1] if start else 0
            stop = min(bisect_left(ends, base + block, start) + 1, n)
            self._keys, self._entries = keys[start:stop], entries[start:stop]
            self._end_block()
            start = stop

    def finish(self, *, created: float, max_seq: int, level: int = 0) -> dict[str, Any]:
        """Write bloom, index, meta and footer; fsync. Returns the meta map."""
        self._end_block()
        bloom = self._write_block(self._bloom.encode())
        index = self._write_block(msgpack.packb([self._last_keys, self._offsets, self._lengths],
                                                use_bin_type=True))
        meta = {"min_key": self.min_key, "max_key": self.max_key, "entries": self.entries,
                "tombstones": self.tombstones, "created": created, "max_seq": max_seq,
                "blocks": len(self._offsets), "level": level, "format": fmt.VERSION}
        meta_pos = self._write_block(msgpack.packb(meta, use_bin_type=True))
        self._buf += fmt.encode_footer(index, bloom, meta_pos, fmt.FLAG_ZLIB if self._compress else 0)
        self._flush_buf()
        self._file.sync()
        self._file.close()
        meta["file_bytes"] = self._offset + fmt.FOOTER.size
        return meta

    def abort(self) -> None:
        """Give up: close and delete the partial file (if that fails too, open() will
        remove it as an orphan)."""
        try:
            self._file.close()
            self._fs.remove(self.path)
        except OSError:
            pass

    def _end_block(self) -> None:
        if not self._keys:
            return
        body = fmt.encode_data_block(self._keys, self._entries, self._compress)
        off, length = self._write_block(body)
        self._last_keys.append(self._keys[-1])
        self._offsets.append(off)
        self._lengths.append(length)
        self._keys, self._entries, self._block_size = [], [], 0

    def _write_block(self, body: bytes) -> tuple[int, int]:
        off = self._offset
        self._buf += fmt.frame_block(body)
        self._offset += len(body) + fmt.TRAILER
        if len(self._buf) >= _BUFFER:
            self._flush_buf()
        return off, len(body)

    def _flush_buf(self) -> None:
        if self._buf:
            self._file.write(bytes(self._buf))
            self._buf = bytearray()
