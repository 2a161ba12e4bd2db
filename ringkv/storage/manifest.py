"""The manifest: which SSTables are live, and how far the commit log is covered by them.

File ``MANIFEST``: ``[magic "RKVMANIF"][version u16][length u32][crc32c u32][payload]``,
payload msgpack ``{"tables": [ids newest first], "next_id": int, "flushed_seq": int}``.

Invariant: the file is only ever replaced whole: written to ``MANIFEST.tmp``, fsync'd,
renamed over ``MANIFEST``, then the directory fsync'd. A crash therefore leaves either the
old or the new manifest, never a mix; files named by neither are orphans that open() removes.
Every table named is fsync'd before it is named. ``flushed_seq`` only grows: every commit
log record with seq <= flushed_seq is in a named table.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, Optional

import msgpack
from crc32c import crc32c

from ringkv.errors import Corruption

NAME = "MANIFEST"
TMP_NAME = "MANIFEST.tmp"
MAGIC = b"RKVMANIF"
VERSION = 1
_HEAD = struct.Struct("<8sHII")


@dataclass
class ManifestState:
    """The durable shape of the table set."""

    tables: list[int] = field(default_factory=list)  # newest first
    next_id: int = 1
    flushed_seq: int = 0


def load(fs: Any, directory: str) -> Optional[ManifestState]:
    """Read the manifest, or None if there is none yet (a fresh engine)."""
    path = os.path.join(directory, NAME)
    if not fs.exists(path):
        return None
    data = fs.read_all(path)
    if len(data) < _HEAD.size:
        raise Corruption(path, 0, "manifest too short")
    magic, version, length, crc = _HEAD.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION:
        raise Corruption(path, 0, "bad manifest magic or version")
    payload = data[_HEAD.size:_HEAD.size + length]
    if len(payload) != length or crc32c(payload) != crc:
        raise Corruption(path, _HEAD.size, "manifest checksum mismatch")
    d = msgpack.unpackb(payload)
    return ManifestState(list(d["tables"]), d["next_id"], d["flushed_seq"])


def save(fs: Any, directory: str, state: ManifestState) -> None:
    """Atomically replace the manifest with ``state``."""
    payload = msgpack.packb({"tables": list(state.tables), "next_id": state.next_id,
                             "flushed_seq": state.flushed_seq})
    tmp = os.path.join(directory, TMP_NAME)
    f = fs.open_write(tmp)
    try:
        f.write(_HEAD.pack(MAGIC, VERSION, len(payload), crc32c(payload)) + payload)
        f.sync()
    finally:
        f.close()
    fs.rename(tmp, os.path.join(directory, NAME))
    fs.sync_dir(directory)
