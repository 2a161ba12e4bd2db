"""The durable hint store of one node: ``data_dir/hints/<target>/<seq>.hints``.

A hint is a version set a node keeps for another node (the *target*) that missed it:
``(target, skey, vs, created)``. Per target the store holds append-only *segments*; new
hints go to the target's one active segment, which rolls after ``SEGMENT_HINTS`` hints.
Replay seals the active segment (later hints start a new one), sends a sealed segment's
hints to the target and deletes the whole segment once every hint in it was acked, so a
crash between send and delete only sends it again (harmless: writes are joins).

Segment layout (little-endian; docs/hints.md): header ``magic b"RKVH", version u16,
flags u16, crc32c u32`` of those 8 bytes, then records ``[len u32][crc32c u32][payload]``
with crc32c over the payload, payload = msgpack ``[created f64, skey bin, vs bin]``: the
commit log's framing. A reader stops quietly at a torn tail (the last batch cut by a
crash) but raises :class:`~ringkv.errors.Corruption` when a bad record has a valid record
after it (acknowledged hints would be skipped) or the header is wrong, unless the bad
record's span shows the zeros of blocks a power failure kept from the disk: the last
write's, never acknowledged, so they end the segment like a torn tail (D44).

Invariants:
- ``write`` returns only after the records are fsync'd (and a new segment's directory
  entry too): a stand-in acks a hint only once it is durable.
- Bounds (:mod:`ringkv.hints`): ``reserve`` refuses a hint once a target holds
  ``max_hints_per_target`` (``hints_dropped_overflow``); ``expire`` drops segments whose
  newest hint is older than ``max_hint_age_s`` (``hints_dropped_expired``).
- Threads: file work (``write``, ``seal``, ``read``, ``remove``, ``expire``) is meant for a
  worker thread and is serialised by one lock; the bookkeeping the event loop calls
  (``reserve``, ``release``, ``pending``, ``stats``) takes only a short second lock.
- Opening never fails on a bad segment: it is renamed ``*.corrupt``, logged and counted
  (``hints_corrupt``); anti-entropy repairs what it held. Files go through the storage
  engine's file seam, so tests run on the in-memory, crash-simulating file system.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
from dataclasses import dataclass
from typing import Any, Iterable

import msgpack
from crc32c import crc32c

from ringkv import hints as policy
from ringkv.errors import Corruption
from ringkv.storage.commitlog_reader import unwritten_hole

log = logging.getLogger(__name__)

MAGIC = b"RKVH"
VERSION = 1
HEADER = struct.Struct("<4sHH")
HEADER_SIZE = HEADER.size + 4
FRAME = struct.Struct("<II")  # payload length, crc32c(payload)
MAX_RECORD = 64 * 1024 * 1024  # a larger length field is corruption
SUFFIX = ".hints"
SEGMENT_HINTS = 1024  # hints per segment before it rolls: bounds a resend after a crash
COUNTERS = ("hints_stored", "hints_replayed", "hints_dropped_overflow",
            "hints_dropped_expired", "hints_corrupt")
_SAFE = re.compile(r"[A-Za-z0-9_-]{1,100}")


@dataclass(frozen=True)
class Hint:
    """One hinted write for ``target``; ``created`` is wall-clock seconds."""

    target: str
    skey: bytes
    vs: bytes
    created: float


@dataclass
class Segment:
    """One segment file of a target and what is known of it without reading it."""

    target: str
    seq: int
    path: str
    count: int = 0
    newest: float = float("-inf")


def encode_record(hint: Hint) -> bytes:
    payload = msgpack.packb([hint.created, hint.skey, hint.vs], use_bin_type=True)
    return FRAME.pack(len(payload), crc32c(payload)) + payload


def encode_header() -> bytes:
    head = HEADER.pack(MAGIC, VERSION, 0)
    return head + crc32c(head).to_bytes(4, "little")


def decode_segment(data: bytes, path: str, target: str) -> list[Hint]:
    """Every whole hint of a segment's bytes; a torn tail is ignored (logged)."""
    if len(data) < HEADER_SIZE:
        if data:
            log.warning("hint segment %s: torn header; treated as empty", path)
        return []
    head = data[:HEADER.size]
    magic, version, _flags = HEADER.unpack(head)
    if magic != MAGIC or crc32c(head) != int.from_bytes(data[HEADER.size:HEADER_SIZE], "little"):
        raise Corruption(path, 0, "bad hint segment header")
    if version != VERSION:
        raise Corruption(path, 0, f"unsupported hint segment version {version}")
    out: list[Hint] = []
    pos, end = HEADER_SIZE, len(data)
    while pos < end:
        payload = _payload_at(data, pos)
        if payload is None:
            later = _next_valid(data, pos + 1)
            if later is not None:
                # every write is synced before the next, so only a segment's last write can
                # have lost blocks to a power failure, and none of its hints was acknowledged
                hole = unwritten_hole(data, pos, later)
                if hole is None:
                    raise Corruption(path, pos, f"bad hint record; a valid record follows at {later}")
                log.warning("hint segment %s: bad record at offset %d where the power failure "
                            "lost blocks of the last write (zeros at offsets %d-%d, whole records "
                            "after them): %d bytes ignored, none of them acknowledged",
                            path, pos, hole[0], hole[1], end - pos)
                break
            log.warning("hint segment %s: torn tail at offset %d, %d bytes ignored",
                        path, pos, end - pos)
            break
        out.append(_decode_payload(payload, path, pos, target))
        pos += FRAME.size + len(payload)
    return out


def _payload_at(data: bytes, pos: int) -> bytes | None:
    if len(data) - pos < FRAME.size:
        return None
    length, crc = FRAME.unpack_from(data, pos)
    start = pos + FRAME.size
    if length > MAX_RECORD or start + length > len(data):
        return None
    payload = data[start:start + length]
    return payload if crc32c(payload) == crc else None


def _next_valid(data: bytes, start: int) -> int | None:
    for pos in range(start, len(data) - FRAME.size):
        length, crc = FRAME.unpack_from(data, pos)
        if 0 < length <= len(data) - pos - FRAME.size and \
                crc32c(data[pos + FRAME.size:pos + FRAME.size + length]) == crc:
            return pos
    return None


def _decode_payload(payload: bytes, path: str, pos: int, target: str) -> Hint:
    try:
        created, skey, vs = msgpack.unpackb(payload, raw=False)
        if type(skey) is bytes and type(vs) is bytes and isinstance(created, (int, float)):
            return Hint(target, skey, vs, float(created))
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        pass
    raise Corruption(path, pos, "malformed hint record payload")


def target_dir_name(node_id: str) -> str:
    """A directory name for a node id (plain when safe, else ``x.`` + hex)."""
    return node_id if _SAFE.fullmatch(node_id) else "x." + node_id.encode().hex()


def target_of_dir(name: str) -> str | None:
    if name.startswith("x."):
        try:
            return bytes.fromhex(name[2:]).decode()
        except (ValueError, UnicodeDecodeError):
            return None
    return name if _SAFE.fullmatch(name) else None


class HintStore:
    """Hints per target node, durable and bounded. See the module docstring."""

    def __init__(self, root: str, max_per_target: int, max_age_s: float, fs: Any = None) -> None:
        if fs is None:
            from ringkv.storage.fs import OsFileSystem
            fs = OsFileSystem()
        self.root, self.fs = root, fs
        self.max_per_target, self.max_age_s = max_per_target, max_age_s
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._io = threading.Lock()
        self._meta = threading.Lock()
        self._pending: dict[str, int] = {}
        self._sealed: dict[str, list[Segment]] = {}
        self._active: dict[str, tuple[Segment, Any]] = {}
        self._next_seq = 1
        fs.makedirs(root)
        self._load()

    # ----- opening ----------------------------------------------------------------

    def _load(self) -> None:
        for name in self.fs.listdir(self.root):
            target = target_of_dir(name)
            if target is None:
                continue
            tdir = os.path.join(self.root, name)
            for fname in self.fs.listdir(tdir):
                if fname.endswith(SUFFIX) and fname[:-len(SUFFIX)].isdigit():
                    self._load_segment(target, int(fname[:-len(SUFFIX)]), os.path.join(tdir, fname))
        for segs in self._sealed.values():
            segs.sort(key=lambda s: s.seq)

    def _load_segment(self, target: str, seq: int, path: str) -> None:
        self._next_seq = max(self._next_seq, seq + 1)
        try:
            found = decode_segment(self.fs.read_all(path), path, target)
        except Corruption as exc:
            log.error("hint segment quarantined: %s", exc)
            self.counters["hints_corrupt"] += 1
            self.fs.rename(path, path + ".corrupt")
            return
        if not found:
            self.fs.remove(path)
            return
        seg = Segment(target, seq, path, len(found), max(h.created for h in found))
        self._sealed.setdefault(target, []).append(seg)
        self._pending[target] = self._pending.get(target, 0) + seg.count

    # ----- bookkeeping (event loop) -------------------------------------------------

    def reserve(self, target: str, n: int = 1) -> bool:
        """Claim room for ``n`` hints for ``target``; False (counted) if over the bound."""
        with self._meta:
            have = self._pending.get(target, 0)
            if policy.over_bound(have + n - 1, self.max_per_target):
                self.counters["hints_dropped_overflow"] += n
                return False
            self._pending[target] = have + n
            return True

    def release(self, target: str, n: int = 1) -> None:
        """Give back room claimed by :meth:`reserve` for hints that were not written."""
        with self._meta:
            self._sub(target, n)

    def pending(self) -> dict[str, int]:
        """Hints held (or reserved) per target, targets with none left out."""
        with self._meta:
            return {t: n for t, n in sorted(self._pending.items()) if n > 0}

    def stats(self) -> dict[str, Any]:
        with self._meta:
            return dict(self.counters, hints_pending=sum(self._pending.values()))

    def _sub(self, target: str, n: int) -> None:
        left = self._pending.get(target, 0) - n
        if left > 0:
            self._pending[target] = left
        else:
            self._pending.pop(target, None)

    # ----- file work (worker thread) --------------------------------------------------

    def write(self, batch: Iterable[Hint]) -> set[str]:
        """Append and fsync every hint of ``batch`` (room already reserved). Returns the
        targets whose hints could not be written (their room is released)."""
        by_target: dict[str, list[Hint]] = {}
        for h in batch:
            by_target.setdefault(h.target, []).append(h)
        failed: set[str] = set()
        with self._io:
            for target, hs in by_target.items():
                try:
                    self._append(target, hs)
                except OSError as exc:
                    log.error("writing %d hints for %s failed: %s", len(hs), target, exc)
                    failed.add(target)
                    self._drop_active(target)
                    self.release(target, len(hs))
        return failed

    def _append(self, target: str, hs: list[Hint]) -> None:
        seg, f = self._active.get(target) or self._open_active(target)
        f.write(b"".join(encode_record(h) for h in hs))
        f.sync()
        seg.count += len(hs)
        seg.newest = max(seg.newest, max(h.created for h in hs))
        with self._meta:
            self.counters["hints_stored"] += len(hs)
        if seg.count >= SEGMENT_HINTS:
            self._seal_locked(target)

    def _open_active(self, target: str) -> tuple[Segment, Any]:
        tdir = os.path.join(self.root, target_dir_name(target))
        if not self.fs.exists(tdir):
            self.fs.makedirs(tdir)
            self.fs.sync_dir(self.root)
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        path = os.path.join(tdir, f"{seq:016d}{SUFFIX}")
        f = self.fs.open_write(path)
        f.write(encode_header())
        f.sync()
        self.fs.sync_dir(tdir)
        self._active[target] = (Segment(target, seq, path), f)
        return self._active[target]

    def _drop_active(self, target: str) -> None:
        """After a failed write the active file's tail is unknown: seal what it held."""
        if target in self._active:
            self._seal_locked(target)

    def _seal_locked(self, target: str) -> None:
        seg, f = self._active.pop(target)
        try:
            f.close()
        except OSError:
            pass
        if seg.count:
            self._sealed.setdefault(target, []).append(seg)
        else:
            self.fs.remove(seg.path)

    def seal(self, target: str) -> list[Segment]:
        """Close ``target``'s active segment; its sealed segments, oldest first."""
        with self._io:
            if target in self._active:
                self._seal_locked(target)
            return list(self._sealed.get(target, ()))

    def read(self, seg: Segment) -> list[Hint]:
        """The hints of a sealed segment. Raises Corruption."""
        return decode_segment(self.fs.read_all(seg.path), seg.path, seg.target)

    def remove(self, seg: Segment, replayed: int = 0, expired: int = 0) -> None:
        """Delete a sealed segment whose hints were all acked (or expired)."""
        with self._io:
            segs = self._sealed.get(seg.target, [])
            if seg in segs:
                segs.remove(seg)
                self.fs.remove(seg.path)
                with self._meta:
                    self._sub(seg.target, seg.count)
                    self.counters["hints_replayed"] += replayed
                    self.counters["hints_dropped_expired"] += expired

    def quarantine(self, seg: Segment) -> None:
        """A sealed segment that raised Corruption on read: rename it aside, count it."""
        with self._io:
            segs = self._sealed.get(seg.target, [])
            if seg in segs:
                segs.remove(seg)
                self.fs.rename(seg.path, seg.path + ".corrupt")
                with self._meta:
                    self._sub(seg.target, seg.count)
                    self.counters["hints_corrupt"] += 1

    def expire(self, now: float) -> int:
        """Drop every segment whose newest hint is past ``max_age_s``; hints dropped."""
        dropped = 0
        with self._io:
            for target, (seg, _f) in list(self._active.items()):
                if seg.count and policy.expired(seg.newest, now, self.max_age_s):
                    self._seal_locked(target)
            for target, segs in self._sealed.items():
                for seg in [s for s in segs if policy.expired(s.newest, now, self.max_age_s)]:
                    segs.remove(seg)
                    self.fs.remove(seg.path)
                    dropped += seg.count
                    with self._meta:
                        self._sub(target, seg.count)
                        self.counters["hints_dropped_expired"] += seg.count
        return dropped

    def targets(self) -> list[str]:
        """Targets with hints held, sorted."""
        return sorted(self.pending())

    def close(self) -> None:
        with self._io:
            for target in list(self._active):
                self._seal_locked(target)


__all__ = ["HintStore", "Hint", "Segment", "decode_segment", "encode_record", "encode_header",
           "target_dir_name", "target_of_dir", "COUNTERS", "SEGMENT_HINTS"]
