"""Commit log reader: replays the records of one segment file.

Torn tails are expected after a crash (the last group write may be cut anywhere): reading
stops at the last whole record and logs a warning naming the file and offset. Anything
else that fails a check raises ``Corruption``: a bad header, a record whose checksum fails
while a valid record follows it, or an impossible length. The rule that separates the two:
after a bad record, if *any* valid record starts later in the file, the damage is not at
the tail, so acknowledged data would be lost by skipping it.

A preallocated segment (D43) ends in zeros: a record frame of length 0 and checksum 0 with
nothing but zeros after it is the normal end of its records, not a torn tail.

One exception to the rule, in the newest segment only (``newest``): a power failure can
lose blocks written after the last fsync while later blocks of the same writes reach the
disk (the kernel writes dirty pages back in any order), leaving zeros where the lost
blocks were with whole records after them. None of those records was acknowledged: the
fsync that would have acknowledged one covers every block before it, the lost ones too.
So a bad record whose span shows such a hole (see ``unwritten_hole``) ends the replay
like a torn tail, with a warning naming the hole and the bytes dropped after it
(docs/decisions.md D44). Older segments were synced whole before the next one began, so
there the rule holds without exception.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

from crc32c import crc32c

from ringkv.errors import Corruption
from ringkv.storage import commitlog_format as fmt

log = logging.getLogger(__name__)

Record = tuple[int, int, bytes, bytes]  # seq, kind, key, body
_KINDS = (fmt.KIND_PUT, fmt.KIND_DELETE, fmt.KIND_PUT_TTL, fmt.KIND_PUT_BASE)


BLOCK = 512  # a disk sector: the smallest unit a lost writeback leaves unwritten


def read_segment(fs: Any, path: str, newest: bool = False) -> Iterator[Record]:
    """Yield (seq, kind, key, body) for each whole record of the segment at ``path``;
    ``newest``: it is the log's last segment, where writes lost at a power failure may
    leave a hole before whole, unacknowledged records (module docstring)."""
    data = fs.read_all(path)
    end = len(data)
    if end < fmt.HEADER_SIZE:
        log.warning("commit log %s: torn header (%d bytes); segment treated as empty", path, end)
        return
    head = data[: fmt.HEADER.size]
    magic, version, _flags, _sid = fmt.HEADER.unpack(head)
    if magic != fmt.MAGIC or crc32c(head) != int.from_bytes(data[fmt.HEADER.size:fmt.HEADER_SIZE], "little"):
        raise Corruption(path, 0, "bad commit log segment header")
    if version != fmt.VERSION:
        raise Corruption(path, 0, f"unsupported commit log version {version}")
    pos = fmt.HEADER_SIZE
    unpack_frame, unpack_head = fmt.FRAME.unpack_from, fmt.PAYLOAD_HEAD.unpack_from
    head_size = fmt.PAYLOAD_HEAD.size
    while pos < end:
        if end - pos < 8:
            _torn(path, data, pos, "partial record header", newest)
            return
        length, crc = unpack_frame(data, pos)
        start = pos + 8
        if length > fmt.MAX_RECORD or length < head_size:
            if length == 0 and crc == 0 and _records_end(data) <= pos:
                # a preallocated segment's unused part (D43): the normal end of its records
                log.debug("commit log %s: zero-filled tail at offset %d", path, pos)
                return
            _torn(path, data, pos, f"impossible record length {length}", newest)
            return
        if start + length > end:
            _torn(path, data, pos, "record cut short", newest)
            return
        if crc32c(data[start:start + length]) != crc:
            _torn(path, data, pos, "record checksum mismatch", newest)
            return
        seq, kind, klen = unpack_head(data, start)
        kstart = start + head_size
        if kind not in _KINDS or kstart + klen > start + length:
            raise Corruption(path, pos, "malformed record payload")
        yield seq, kind, data[kstart:kstart + klen], data[kstart + klen:start + length]
        pos = start + length


def _torn(path: str, data: bytes, pos: int, why: str, newest: bool) -> None:
    """A bad record at ``pos``: a torn tail (warn) unless a valid record follows (raise),
    or, in the newest segment, the hole of a lost writeback precedes it (warn)."""
    records_end = _records_end(data)
    later = _next_valid_record(data, pos + 1, records_end)
    if later is not None:
        hole = unwritten_hole(data, pos, later) if newest else None
        if hole is None:
            raise Corruption(path, pos, f"{why}; a valid record follows at offset {later}")
        log.warning("commit log %s: bad record at offset %d (%s) where the power failure lost "
                    "blocks of the last writes (zeros at offsets %d-%d, whole records after "
                    "them): replayed up to the last whole record before it, %d bytes after it "
                    "dropped, all written after the last completed fsync and so never "
                    "acknowledged", path, pos, why, hole[0], hole[1], max(records_end - pos, 0))
        return
    trailing = max(records_end - pos, 0)  # a preallocated segment's zeros not counted
    log.warning("commit log %s: torn tail at offset %d (%s); replayed up to the last whole "
                "record, %d trailing bytes ignored", path, pos, why, trailing)


def _records_end(data: bytes) -> int:
    """Where a segment's zero-filled tail starts (its length if it has none): a
    preallocated segment's unused part (D43)."""
    return len(data.rstrip(b"\0"))


def unwritten_hole(data: bytes, pos: int, later: int) -> tuple[int, int] | None:
    """The zeros a lost writeback left in the span of a bad record at ``pos`` (up to the
    next valid record at ``later``), as (start, end), or None if the span shows none.
    (The hint store's segments share this framing and this rule, ringkv/hint_store.py.)

    Lost units are sector-aligned (BLOCK) and lie after the last completed fsync, which
    ended at a record boundary at or before ``pos``. So the hole is either a whole zero
    block inside the span, or zeros from ``pos`` itself up to a block boundary, with the
    record's length field among them (a record's length is never 0, so those bytes were
    never written)."""
    first = (pos // BLOCK + 1) * BLOCK  # the first block boundary after pos
    if first <= later and data[pos:pos + 4] == b"\0\0\0\0" and not data[pos:first].strip(b"\0"):
        return pos, first
    zeros = bytes(BLOCK)
    for b in range(first, later - BLOCK + 1, BLOCK):
        if data[b:b + BLOCK] == zeros:
            return b, b + BLOCK
    return None


def _next_valid_record(data: bytes, start: int, records_end: int) -> int | None:
    """Offset of the first checksum-valid record at or after ``start`` and before
    ``records_end`` (slow path)."""
    end = len(data)
    unpack_frame = fmt.FRAME.unpack_from
    head_size = fmt.PAYLOAD_HEAD.size
    # a record's length field is not zero, so none starts in a zero-filled tail (D43: a
    # preallocated segment's unused part); skipping it keeps a torn tail's check short
    last_start = min(end - 8 - head_size, records_end - 1)
    for pos in range(start, last_start + 1):
        length, crc = unpack_frame(data, pos)
        if head_size <= length <= end - pos - 8 and crc32c(data[pos + 8:pos + 8 + length]) == crc:
            return pos
    return None
