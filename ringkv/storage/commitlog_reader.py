"""Commit log reader: replays the records of one segment file.

Torn tails are expected after a crash (the last group write may be cut anywhere): reading
stops at the last whole record and logs a warning naming the file and offset. Anything
else that fails a check raises ``Corruption``: a bad header, a record whose checksum fails
while a valid record follows it, or an impossible length. The rule that separates the two:
after a bad record, if *any* valid record starts later in the file, the damage is not at
the tail, so acknowledged data would be lost by skipping it.

A preallocated segment (D43) ends in zeros: a record frame of length 0 and checksum 0 with
nothing but zeros after it is the normal end of its records, not a torn tail.
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


def read_segment(fs: Any, path: str) -> Iterator[Record]:
    """Yield (seq, kind, key, body) for each whole record of the segment at ``path``."""
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
            _torn(path, data, pos, "partial record header")
            return
        length, crc = unpack_frame(data, pos)
        start = pos + 8
        if length > fmt.MAX_RECORD or length < head_size:
            if length == 0 and crc == 0 and _records_end(data) <= pos:
                # a preallocated segment's unused part (D43): the normal end of its records
                log.debug("commit log %s: zero-filled tail at offset %d", path, pos)
                return
            _torn(path, data, pos, f"impossible record length {length}")
            return
        if start + length > end:
            _torn(path, data, pos, "record cut short")
            return
        if crc32c(data[start:start + length]) != crc:
            _torn(path, data, pos, "record checksum mismatch")
            return
        seq, kind, klen = unpack_head(data, start)
        kstart = start + head_size
        if kind not in _KINDS or kstart + klen > start + length:
            raise Corruption(path, pos, "malformed record payload")
        yield seq, kind, data[kstart:kstart + klen], data[kstart + klen:start + length]
        pos = start + length


def _torn(path: str, data: bytes, pos: int, why: str) -> None:
    """A bad record at ``pos``: a torn tail (warn) unless a valid record follows (raise)."""
    records_end = _records_end(data)
    later = _next_valid_record(data, pos + 1, records_end)
    if later is not None:
        raise Corruption(path, pos, f"{why}; a valid record follows at offset {later}")
    trailing = max(records_end - pos, 0)  # a preallocated segment's zeros not counted
    log.warning("commit log %s: torn tail at offset %d (%s); replayed up to the last whole "
                "record, %d trailing bytes ignored", path, pos, why, trailing)


def _records_end(data: bytes) -> int:
    """Where a segment's zero-filled tail starts (its length if it has none): a
    preallocated segment's unused part (D43)."""
    return len(data.rstrip(b"\0"))


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
