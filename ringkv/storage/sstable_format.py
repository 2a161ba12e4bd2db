"""Byte layout of an SSTable file (see docs/format/sstable.md).

``[data block]* [bloom block] [index block] [meta block] [footer]``. Every block is
``[body][crc32c(body) u32]``. A data block body is msgpack ``[keys, entries]`` (two
parallel arrays, keys ascending; entries as in entry.py), zlib-compressed when the footer's
flag says so. The index body is msgpack ``[last_keys, offsets, lengths]``: for block i its
greatest key, file offset and body length. The meta body is a msgpack map. The footer is a
fixed 52 bytes at the end of the file:
``index_off u64, index_len u32, bloom_off u64, bloom_len u32, meta_off u64, meta_len u32,
version u16, flags u16, crc32c u32 (of the previous 40 bytes), magic 8s``.

Invariants: a file is written once and never modified; every read of any block checks its
crc and raises ``Corruption(path, offset)`` on mismatch, so a reader never returns bytes
that were not written.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import msgpack
from crc32c import crc32c

from ringkv.errors import Corruption

MAGIC = b"RKVSSTBL"
VERSION = 1
FLAG_ZLIB = 1
FOOTER = struct.Struct("<QIQIQIHHI8s")
FOOTER_CRC_SPAN = 40  # bytes of the footer covered by its crc
TRAILER = 4  # crc32c after each block body
SUFFIX = ".sst"


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


def encode_data_block(keys: list[bytes], entries: list[Any], compress: bool) -> bytes:
    body = msgpack.packb([keys, entries], use_bin_type=True)
    return zlib.compress(body, 1) if compress else body


def decode_data_block(path: str, offset: int, body: bytes, compress: bool) -> tuple[list, list]:
    try:
        if compress:
            body = zlib.decompress(body)
        keys, entries = msgpack.unpackb(body, raw=False)
    except Exception as e:  # crc passed but content does not parse: still corruption
        raise Corruption(path, offset, f"undecodable data block: {e}") from None
    return keys, entries


def encode_footer(index: tuple[int, int], bloom: tuple[int, int], meta: tuple[int, int],
                  flags: int) -> bytes:
    head = FOOTER.pack(index[0], index[1], bloom[0], bloom[1], meta[0], meta[1],
                       VERSION, flags, 0, MAGIC)
    crc = crc32c(head[:FOOTER_CRC_SPAN])
    return FOOTER.pack(index[0], index[1], bloom[0], bloom[1], meta[0], meta[1],
                       VERSION, flags, crc, MAGIC)


def decode_footer(path: str, offset: int, raw: bytes) -> tuple:
    """-> (index (off, len), bloom (off, len), meta (off, len), flags)."""
    if len(raw) != FOOTER.size:
        raise Corruption(path, offset, "file too short for an SSTable footer")
    io, il, bo, bl, mo, ml, version, flags, crc, magic = FOOTER.unpack(raw)
    if magic != MAGIC:
        raise Corruption(path, offset, "bad SSTable magic")
    if crc32c(raw[:FOOTER_CRC_SPAN]) != crc:
        raise Corruption(path, offset, "footer checksum mismatch")
    if version != VERSION:
        raise Corruption(path, offset, f"unsupported SSTable version {version}")
    return (io, il), (bo, bl), (mo, ml), flags
