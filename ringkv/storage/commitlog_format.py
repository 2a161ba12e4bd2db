"""Byte layout of commit log segments (see docs/format/commitlog.md).

A segment is ``[header][record]*``. Header (20 bytes): magic ``b"RKVL"``, format version
u16, flags u16 (0), segment id u64, crc32c u32 of the preceding 16 bytes. Record:
``[len u32][crc32c u32][payload]`` with crc32c over the payload; payload is
``[seq u64][kind u8][klen u32][key][body]``. All integers little-endian.

Invariants: records are appended in sequence-number order, one sequence number per
record, so a reader can tell exactly which writes a segment holds.
"""

from __future__ import annotations

import struct

MAGIC = b"RKVL"
VERSION = 1
HEADER = struct.Struct("<4sHHQ")  # magic, version, flags, segment id
HEADER_SIZE = HEADER.size + 4  # + crc32c of the header
FRAME = struct.Struct("<II")  # payload length, crc32c(payload)
PAYLOAD_HEAD = struct.Struct("<QBI")  # seq, kind, key length
F64 = struct.Struct("<d")
MAX_RECORD = 256 * 1024 * 1024  # sanity bound: a larger length field is corruption

KIND_PUT = 1  # body: value
KIND_DELETE = 2  # body: f64 deletion time
KIND_PUT_TTL = 3  # body: f64 expire-at time, then value
KIND_PUT_BASE = 4  # body: value; merge mode: a base that shadows the key's older entries

SUFFIX = ".log"


# the next segment while it is preallocated (D43): never replayed, removed at every open
PREPARED_NAME = "next-segment.tmp"


def segment_name(segment_id: int) -> str:
    """File name of a segment; names sort in segment order."""
    return f"{segment_id:016d}{SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """Segment id from a file name, or None if the name is not a segment."""
    if not name.endswith(SUFFIX) or not name[: -len(SUFFIX)].isdigit():
        return None
    return int(name[: -len(SUFFIX)])
