"""``ringkv snapshot``: take, list or clear snapshots on one node or on every node.

Each node writes its own snapshot (ringkv/snapshots.py) under its data directory; with
``--all`` the command asks the node at ``--host`` for the ring and calls every node in it
with the same name, so the cluster's snapshots line up for a restore. A node that cannot
be reached is reported and makes the command fail; the others still take theirs.
"""

from __future__ import annotations

import time
from typing import Callable

from ringkv import localcluster as lc
from ringkv.errors import RingkvError

Say = Callable[[str], None]
SNAPSHOT_TIMEOUT_S = 600.0  # a snapshot flushes the memtable first; give it time


def _targets(address: str, every: bool) -> list[tuple[str, str]]:
    """(node id or address, address) of the nodes to call."""
    if not every:
        return [(address, address)]
    ring = lc.rpc_call(address, "ring", timeout=5.0)
    return [(str(n["node_id"]), f"{n.get('host', '127.0.0.1')}:{n['port']}")
            for n in ring.get("nodes", []) if str(n.get("state", "normal")) != "removed"]


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def run(address: str, every: bool, name: str | None, listing: bool, clear: str | None,
        say: Say) -> int:
    """The command's work; the number of nodes that failed."""
    if not listing and not clear:  # chosen here, so that with --all every node uses it
        name = name or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    failed = 0
    for who, addr in _targets(address, every):
        try:
            if listing:
                reply = lc.rpc_call(addr, "snapshots", timeout=10.0)
                snaps = reply.get("snapshots", [])
                if not snaps:
                    say(f"{reply.get('node_id', who)}: no snapshots")
                for s in snaps:
                    say(f"{reply.get('node_id', who)}: {s['name']}  {s['tables']} tables  "
                        f"{_size(int(s['bytes']))}  {s['path']}")
            elif clear:
                lc.rpc_call(addr, "snapshot_clear", {"name": clear}, timeout=60.0)
                say(f"{who}: cleared snapshot {clear}")
            else:
                s = lc.rpc_call(addr, "snapshot", {"name": name}, timeout=SNAPSHOT_TIMEOUT_S)
                say(f"{s['node_id']}: snapshot {s['name']}: {s['tables']} tables, "
                    f"{_size(int(s['bytes']))} in {s['seconds']}s, at {s['path']}")
        except RingkvError as exc:
            failed += 1
            say(f"{who}: failed: {exc}")
    return failed


__all__ = ["run"]
