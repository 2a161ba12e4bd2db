"""Byte layout of an SSTable file (see docs/format/sstable.md).

``[data block]* [bloom block] [index block] [meta block] [footer]``. Every block is
``[body][crc32c(body) u32]``; data block bodies are zlib-compressed when the footer's flag
says so. A version-2 data block body (after decompression) is laid out so that a lookup can
find a key directly in the bytes, without decoding the block:

``[entries: msgpack array, element j = entry j] [keys] [eoff: (n+1) u32] [koff: (n+1) u32,
only when key lengths differ] [n u32] [width u32]``

``eoff[j]`` is the body offset of entry j (``eoff[n]`` = end of the entries array, = start
of the keys). With ``width`` > 0 every key is ``width`` bytes and key j starts at
``eoff[n] + j*width``; with ``width`` = 0, ``koff[j]`` is the body offset of key j and
``koff[n]`` its end. Version-1 data blocks (msgpack ``[keys, entries]``) are still read.
The index body is msgpack ``[last_keys, offsets, lengths]``: for block i its greatest key,
file offset and body length. The meta body is a msgpack map. The footer is a fixed 52 bytes
at the end of the file:
``index_off u64, index_len u32, bloom_off u64, bloom_len u32, meta_off u64, meta_len u32,
version u16, flags u16, crc32c u32 (of the previous 40 bytes), magic 8s``.

Invariants: a file is written once and never modified; every read of any block checks its
crc and raises ``Corruption(path, offset)`` on mismatch, so a reader never returns bytes
that were not written; a data block whose layout is inconsistent is ``Corruption`` too.
"""

from __future__ import annotations

import struct
import zlib
from functools import lru_cache
from itertools import accumulate
from typing import Any, Sequence

import msgpack
from crc32c import crc32c

from ringkv.errors import Corruption

MAGIC = b"RKVSSTBL"
VERSION = 2  # written; READ_VERSIONS are read
READ_VERSIONS = (1, 2)
FLAG_ZLIB = 1
FOOTER = struct.Struct("<QIQIQIHHI8s")
FOOTER_CRC_SPAN = 40  # bytes of the footer covered by its crc
TRAILER = 4  # crc32c after each block body
SUFFIX = ".sst"
U32 = struct.Struct("<I")
BLOCK_TAIL = struct.Struct("<II")  # n, width (0: key lengths differ, koff array present)


def table_name(table_id: int) -> str:
    return f"{table_id:016d}{SUFFIX}"


def parse_table_name(name: str) -> int | None:
    if not name.endswith(SUFFIX) or not name[: -len(SUFFIX)].isdigit():
        return None
    return int(name[: -len(SUFFIX)])


def frame_block(body: bytes) -> bytes:
    """Append the crc trailer to a block body."""
    return body + crc32c(body).to_bytes(4, "little")


def check_block(path: str, offset: int, raw: bytes, length: int) -> bytes:
    """Verify a framed block read at ``offset`` (body length ``length``); return the body."""
    if len(raw) != length + TRAILER:
        raise Corruption(path, offset, "block extends past end of file")
    body = raw[:length]
    if crc32c(body) != int.from_bytes(raw[length:], "little"):
        raise Corruption(path, offset, "block checksum mismatch")
    return body


def _packed_size(entry: Any) -> int:
    """Bytes msgpack (use_bin_type) uses for one entry."""
    cls = entry.__class__
    if cls is bytes:
        n = len(entry)
        return n + (2 if n < 0x100 else 3 if n < 0x10000 else 5)
    if cls is float:
        return 9
    # (value, expire_at, base): in merge mode nearly every entry (entry.py), so counted
    # here rather than packed a second time (packing it was most of a flushed entry's
    # cost); any other shape is packed. encode_data_block checks the sum either way.
    if (cls is tuple or cls is list) and len(entry) == 3:  # type: ignore[arg-type]
        value, expire, base = entry  # type: ignore[misc]
        if value.__class__ is bytes and base.__class__ is bool and (
                expire is None or expire.__class__ is float):
            n = len(value)
            return (n + (2 if n < 0x100 else 3 if n < 0x10000 else 5)
                    + (1 if expire is None else 9) + 2)  # + array header and bool
    return len(msgpack.packb(entry, use_bin_type=True))


def encode_data_block(keys: list[bytes], entries: list[Any], compress: bool) -> bytes:
    """A version-2 data block body. REQUIRES: 1 <= len(keys) == len(entries), keys ascending."""
    n = len(keys)
    packed = msgpack.packb(entries, use_bin_type=True)
    sizes = list(map(_packed_size, entries))
    eoff = list(accumulate(sizes, initial=len(packed) - sum(sizes)))  # after the array header
    pos = eoff[-1]
    if pos != len(packed) or eoff[0] not in (1, 3, 5):
        raise RuntimeError("entry size computation disagrees with msgpack")
    width = len(keys[0])
    parts = [packed, b"".join(keys), struct.pack(f"<{n + 1}I", *eoff)]
    if width == 0 or any(len(k) != width for k in keys):
        width, kpos, koff = 0, pos, [pos]
        for k in keys:
            kpos += len(k)
            koff.append(kpos)
        parts.append(struct.pack(f"<{n + 1}I", *koff))
    parts.append(BLOCK_TAIL.pack(n, width))
    body = b"".join(parts)
    return zlib.compress(body, 1) if compress else body


def parse_data_block(path: str, offset: int, body: bytes) -> tuple:
    """Check a version-2 block body's layout; -> ``(body, n, width, kbase, eoff_base)``:
    keys start at ``kbase``, the eoff array at ``eoff_base`` (the koff array, if any, right
    after it). This tuple is what the block cache holds."""
    size = len(body)
    try:
        if size < BLOCK_TAIL.size:
            raise ValueError("block too short")
        n, width = BLOCK_TAIL.unpack_from(body, size - BLOCK_TAIL.size)
        eoff_base = size - BLOCK_TAIL.size - 4 * (n + 1) * (1 if width else 2)
        if n == 0 or eoff_base < 0:
            raise ValueError("bad entry count")
        kbase = U32.unpack_from(body, eoff_base + 4 * n)[0]
        if width:
            kend = kbase + n * width
        else:
            koff = eoff_base + 4 * (n + 1)
            if U32.unpack_from(body, koff)[0] != kbase:
                raise ValueError("key offsets do not start at the keys")
            kend = U32.unpack_from(body, koff + 4 * n)[0]
        if kend != eoff_base:
            raise ValueError("keys do not end at the offset arrays")
    except (ValueError, struct.error) as e:
        raise Corruption(path, offset, f"bad data block layout: {e}") from None
    return body, n, width, kbase, eoff_base


@lru_cache(maxsize=64)
def _fixed_keys(n: int, width: int) -> struct.Struct:
    return struct.Struct(f"{width}s" * n)


def block_keys(blk: tuple) -> Sequence[bytes]:
    """Every key of a parsed version-2 block, in order."""
    body, n, width, kbase, eoff_base = blk
    if width:
        return _fixed_keys(n, width).unpack_from(body, kbase)
    ko = struct.unpack_from(f"<{n + 1}I", body, eoff_base + 4 * (n + 1))
    return [body[ko[i]:ko[i + 1]] for i in range(n)]


def decode_data_block(path: str, offset: int, blk: tuple, version: int) -> tuple[Sequence, list]:
    """(keys, entries) of a whole data block: ``blk`` is the cached form of it, a parsed
    version-2 block (:func:`parse_data_block`) or ``(body,)`` for version 1."""
    try:
        if version == 1:
            keys, entries = msgpack.unpackb(blk[0], raw=False)
            return keys, entries
        entries = msgpack.unpackb(memoryview(blk[0])[:blk[3]], raw=False)
        keys = block_keys(blk)
        if len(entries) != len(keys):
            raise ValueError("entry count mismatch")
    except Exception as e:  # crc passed but content does not parse: still corruption
        raise Corruption(path, offset, f"undecodable data block: {e}") from None
    return keys, entries


def decompress_block(path: str, offset: int, body: bytes) -> bytes:
    try:
        return zlib.decompress(body)
    except zlib.error as e:
        raise Corruption(path, offset, f"undecodable data block: {e}") from None


def encode_footer(index: tuple[int, int], bloom: tuple[int, int], meta: tuple[int, int],
                  flags: int) -> bytes:
    head = FOOTER.pack(index[0], index[1], bloom[0], bloom[1], meta[0], meta[1],
                       VERSION, flags, 0, MAGIC)
    crc = crc32c(head[:FOOTER_CRC_SPAN])
    return FOOTER.pack(index[0], index[1], bloom[0], bloom[1], meta[0], meta[1],
                       VERSION, flags, crc, MAGIC)


def decode_footer(path: str, offset: int, raw: bytes) -> tuple:
    """-> (index (off, len), bloom (off, len), meta (off, len), flags, version)."""
    if len(raw) != FOOTER.size:
        raise Corruption(path, offset, "file too short for an SSTable footer")
    io, il, bo, bl, mo, ml, version, flags, crc, magic = FOOTER.unpack(raw)
    if magic != MAGIC:
        raise Corruption(path, offset, "bad SSTable magic")
    if crc32c(raw[:FOOTER_CRC_SPAN]) != crc:
        raise Corruption(path, offset, "footer checksum mismatch")
    if version not in READ_VERSIONS:
        raise Corruption(path, offset, f"unsupported SSTable format version {version} "
                                       f"(this build reads {READ_VERSIONS})")
    return (io, il), (bo, bl), (mo, ml), flags, version
