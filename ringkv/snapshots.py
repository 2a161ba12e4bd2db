"""Snapshots of one node's data: ``snapshot``, ``snapshots`` and ``snapshot_clear`` RPCs.

A snapshot is a directory ``data_dir/snapshots/<name>/`` that is itself a data directory:
the node's identity and incarnation files and an ``engine/`` checkpoint
(:meth:`ringkv.storage.engine.Engine.checkpoint`: the memtable flushed, every live
SSTable hard-linked, a manifest naming them, no commit log), plus ``SNAPSHOT.json``
saying what it holds. Hard links cost no space until compaction replaces the tables they
share. To restore, stop the node and start it on a copy of the snapshot directory
(docs/operations.md, "Snapshots, backup and restore"); a restored directory is wound
back in time, which the incarnation rule covers (ringkv/incarnation.py: a restart takes
at least the clock's seconds since 2025, so no dot is minted twice), and ``ringkv repair`` brings
back the writes since.

Invariants: a snapshot directory appears whole or not at all (built under a temporary
name, renamed when complete); names are short, plain and unique per node; the engine's
blocking work runs off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ringkv.atomic_write import sync_dir, write_atomic
from ringkv.errors import InvalidRequest
from ringkv.identity import FILE_NAME as IDENTITY_FILE
from ringkv.incarnation import FILE_NAME as INCARNATION_FILE

DIR_NAME = "snapshots"
INFO_FILE = "SNAPSHOT.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_BUILDING = ".building-"  # prefix of a snapshot being written (removed if left by a crash)


class Snapshots:
    """The snapshot RPCs of one node (``node.engine``, ``node.config``, ``node.clock``)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self._lock = asyncio.Lock()  # one snapshot at a time per node

    @property
    def root(self) -> Path:
        return Path(self.node.config.node.data_dir) / DIR_NAME

    def handlers(self) -> dict[str, Any]:
        return {"snapshot": self._rpc_snapshot, "snapshots": self._rpc_list,
                "snapshot_clear": self._rpc_clear}

    async def _rpc_snapshot(self, body: dict) -> dict:
        """``name`` (optional; default the UTC time): take a snapshot; what it holds."""
        name = body.get("name") or time.strftime("%Y%m%d-%H%M%S",
                                                 time.gmtime(self.node.clock.now()))
        _check_name(name)
        async with self._lock:
            dest = self.root / name
            if dest.exists():
                raise InvalidRequest(f"snapshot {name!r} exists already on {self.node.node_id}")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, self._take, name, dest)

    def _take(self, name: str, dest: Path) -> dict:
        node = self.node
        data_dir = Path(node.config.node.data_dir)
        self.root.mkdir(exist_ok=True)
        for stale in self.root.glob(_BUILDING + "*"):  # a snapshot a crash interrupted
            shutil.rmtree(stale, ignore_errors=True)
        building = self.root / (_BUILDING + name)
        building.mkdir()
        try:
            started = time.monotonic()
            held = node.engine.checkpoint(str(building / "engine"))
            for fname in (IDENTITY_FILE, INCARNATION_FILE):
                if (data_dir / fname).exists():
                    shutil.copy2(data_dir / fname, building / fname)
            info = {"name": name, "node_id": node.node_id, "created": node.clock.now(),
                    "tables": held["tables"], "bytes": held["bytes"],
                    "seconds": round(time.monotonic() - started, 3)}
            write_atomic(building / INFO_FILE, json.dumps(info, indent=2) + "\n")
            os.replace(building, dest)
            sync_dir(self.root)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        return {**info, "path": str(dest)}

    def _rpc_list(self, body: dict) -> dict:
        """Every complete snapshot of this node, oldest first."""
        out = []
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                info = _info(d)
                if info is not None:
                    out.append({**info, "path": str(d)})
        out.sort(key=lambda i: (i.get("created", 0), i.get("name", "")))
        return {"node_id": self.node.node_id, "snapshots": out}

    async def _rpc_clear(self, body: dict) -> dict:
        """``name``: delete that snapshot (its hard links; tables still live stay)."""
        name = body.get("name")
        if not isinstance(name, str):
            raise InvalidRequest("snapshot_clear needs name (str)")
        _check_name(name)
        async with self._lock:
            dest = self.root / name
            if _info(dest) is None:
                raise InvalidRequest(f"no snapshot {name!r} on {self.node.node_id}")
            await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, dest)
        return {"cleared": name}


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest("a snapshot name is 1-64 letters, digits, '_', '.' or '-', "
                             f"starting with a letter or digit (got {name!r})")


def _info(d: Path) -> dict | None:
    try:
        info = json.loads((d / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


__all__ = ["Snapshots", "DIR_NAME", "INFO_FILE"]
