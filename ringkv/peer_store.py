"""The persisted membership view: ``data_dir/peers.json``.

Why: gossip state lives in memory, so a node that restarts would otherwise know no peer
until gossip reaches it, and in between it coordinated with a ring that lacked the
members it had not heard of yet, or had them in an old state (a leaving node as normal,
a removed one as a member). Two coordinators that disagree on the ring pick replica sets
whose quorums need not intersect (docs/decisions.md D17). The node therefore writes every
peer's record (state, tokens, generation, addresses; removed and leaving ones included)
whenever one of those changes, and restores them at start through
:meth:`ringkv.membership.Membership.restore`, which treats them as down until heard of.

Layout (JSON)::

    {"format": 1, "members": [{"id": "n2", "gen": 1732530000123, "hb": 57,
      "state": "leaving", "tokens": [...], "dc": "dc1", "rack": "rack1",
      "host": "127.0.0.1", "port": 7401, "http": 8401, "age": 0.0, "down": false}, ...]}

Each member is a full gossip entry (``membership_record.encode_entry``), validated on load
by the same parser that checks gossip. Invariants: the file is replaced atomically (temp
file, sync, rename, sync of the directory) through the node's file seam, so a crash leaves
the old or the new view, never a torn one, and under ``ringkv.sim`` it lives on the node's
crash-consistent simulated disk. Heartbeats in it are those of the last write (only
ordering within a generation uses them, and a live peer's are always newer).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from ringkv.errors import ConfigError, ProtocolError
from ringkv.membership_record import Member, decode_entry, encode_entry

FILE_NAME = "peers.json"
FORMAT = 1


def _fs(fs: Any) -> Any:
    if fs is None:
        from ringkv.storage.fs import OsFileSystem

        fs = OsFileSystem()
    return fs


def encode(records: Sequence[Member]) -> bytes:
    """The file's bytes for ``records`` (sorted by node id)."""
    members = [encode_entry(m, 0.0, False) for m in sorted(records, key=lambda m: m.node_id)]
    return json.dumps({"format": FORMAT, "members": members}, sort_keys=True).encode()


def decode(data: bytes, path: str = FILE_NAME) -> list[Member]:
    """Inverse of :func:`encode`; ConfigError if the file is damaged."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"unknown format {doc.get('format') if isinstance(doc, dict) else doc!r}")
        raw = doc["members"]
        if not isinstance(raw, list):
            raise ValueError("members is not a list")
        entries = [decode_entry(e) for e in raw]
    except (ValueError, KeyError, TypeError, ProtocolError) as exc:
        raise ConfigError("node.data_dir", f"{path} is damaged ({exc}); it is only a cache "
                          "of the membership view: remove it and the node re-learns the "
                          "view by gossip") from None
    if not all(e.full for e in entries):
        raise ConfigError("node.data_dir", f"{path} is damaged (an entry lacks its tokens)")
    return [e.member for e in entries]


def load(data_dir: str, fs: Any = None) -> list[Member]:
    """The records stored in ``data_dir`` ([] if there are none)."""
    fs = _fs(fs)
    path = os.path.join(data_dir, FILE_NAME)
    try:
        data = fs.read_all(path)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError("node.data_dir", f"cannot read {path}: {exc}") from None
    return decode(data, path)


def save(data_dir: str, records: Sequence[Member], fs: Any = None) -> None:
    """Replace the stored records atomically: temp file, sync, rename, sync the directory."""
    fs = _fs(fs)
    path = os.path.join(data_dir, FILE_NAME)
    tmp = path + ".tmp"
    fs.makedirs(data_dir)
    f = fs.open_write(tmp)
    try:
        f.write(encode(records))
        f.sync()
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.sync_dir(data_dir)


__all__ = ["FILE_NAME", "load", "save", "encode", "decode"]
