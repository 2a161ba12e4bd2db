"""What ``ringkv status`` and ``ringkv ring`` show: one node's view of the cluster.

:class:`ClusterView` joins a node's ``ring`` reply with each up node's ``status`` reply
(load, pending hints, cluster secret and TLS; one RPC per node) and renders the
nodetool-style tables (rich) or a JSON-ready dict.
It only reads: every RPC is a short ``lc.rpc_call`` with a timeout, and a node that does
not answer shows as unknown ("?") rather than failing the whole view.
"""

from __future__ import annotations

import sys
from typing import Any

from ringkv import localcluster as lc
from ringkv.errors import RingkvError

# nodetool's two letters: U(p)/D(own), then N(ormal)/J(oining)/L(eaving)/M(oving)
_STATE_CODE = {"normal": "UN", "up": "UN", "alive": "UN", "joining": "UJ", "leaving": "UL",
               "moving": "UM", "down": "DN", "dead": "DN", "removed": "DL"}


class ClusterView:
    """One node's view of the cluster (its ``ring`` reply) plus each node's ``status``
    reply (``statuses``: None for a node that is down or did not answer)."""

    def __init__(self, source: str, reply: dict, statuses: dict[str, dict | None]) -> None:
        from ringkv.ring import NodeInfo, Ring

        self.source, self.nodes, self.statuses = source, list(reply.get("nodes") or []), statuses
        self.loads = {nid: _load_in(st) for nid, st in statuses.items()}
        replication = {str(k): int(v) for k, v in dict(reply.get("replication") or {}).items()}
        infos = [NodeInfo(str(n["node_id"]), tuple(int(t) for t in n.get("tokens") or ()),
                          str(n.get("dc", "dc1")), str(n.get("rack", "rack1")),
                          str(n.get("host", "")), int(n.get("port", 0))) for n in self.nodes]
        self.ring = Ring(infos, replication or {"dc1": 1})
        self.owns = self.ring.ownership() if self.ring.tokens else {}
        self.primary = self.ring.primary_ownership() if self.ring.tokens else {}

    @classmethod
    def gather(cls, address: str, with_status: bool) -> "ClusterView":
        """``address``'s ring, and with ``with_status`` each up node's status reply."""
        reply = lc.rpc_call(address, "ring", timeout=3.0)
        statuses: dict[str, dict | None] = {}
        for n in reply.get("nodes") or []:
            up = lc.is_up(n.get("state"))
            where = f"{n.get('host')}:{n.get('port')}"
            statuses[str(n["node_id"])] = _status_of(where) if with_status and up else None
        return cls(address, reply, statuses)

    def dcs(self) -> list[str]:
        return sorted({str(n.get("dc", "dc1")) for n in self.nodes})

    def code(self, node: dict) -> str:
        return _STATE_CODE.get(str(node.get("state") or "").lower(), "?N")

    def security_line(self) -> str | None:
        """Whether the nodes that answered have a cluster secret and serve TLS (D32, D33),
        naming the nodes on each side when they differ (a node left out of a rolling
        change is what an operator looks for); None if no node answered."""
        known = {nid: st for nid, st in self.statuses.items() if st is not None}
        if not known:
            return None
        parts = []
        for label, key in (("cluster secret", "authenticated"), ("TLS", "tls")):
            on = sorted(nid for nid, st in known.items() if st.get(key))
            off = sorted(nid for nid in known if nid not in on)
            if not off or not on:
                parts.append(f"{label} {'on' if on else 'off'}")
            else:
                parts.append(f"{label} on {', '.join(on)} but off on {', '.join(off)}")
        if len(known) == len(self.nodes):
            told = f"all {len(known)} nodes" if len(known) > 1 else "the one node"
        else:
            told = f"the {len(known)} of {len(self.nodes)} nodes that answered"
        return f"Security: {'; '.join(parts)} ({told})"

    def handover_line(self) -> str | None:
        """Which nodes that answered still send writes of the ranges a finished join
        moved to their previous replicas too (D39), and for how long; None if none."""
        left = {nid: float(st.get("handover_s") or 0.0) for nid, st in self.statuses.items()
                if st is not None}
        on = sorted(nid for nid, s in left.items() if s > 0)
        if not on:
            return None
        return (f"Handover after a join: {', '.join(on)} also write the moved ranges to "
                f"their previous replicas (W + P), {max(left.values()):.0f}s more at most")

    def storage_line(self) -> str | None:
        """Which nodes that answered refuse writes because their disk is nearly full
        (storage.min_free_bytes, D36), whose commit log waits for space (D42) or which keep
        failing to flush (D37), else the least free space among them; None if no node
        answered or none reports its free space."""
        engines = {nid: st.get("engine") or {} for nid, st in self.statuses.items()
                   if st is not None}
        problems = []
        for nid in sorted(engines):
            e = engines[nid]
            if e.get("storage_full"):
                problems.append(
                    f"{nid} refuses writes, disk nearly full ({_size(e.get('free_bytes'))} free, "
                    f"under storage.min_free_bytes = {_size(e.get('min_free_bytes'))})")
            if e.get("commitlog_stalled"):  # D42: the disk filled under the commit log
                problems.append(f"{nid} commit log waits for disk space (writes unacknowledged "
                                f"until it fits; {_size(e.get('free_bytes'))} free)")
            if e.get("last_flush_error"):  # D37: retried; writes stall if it goes on
                problems.append(f"{nid} cannot flush ({e.get('flush_failures')} attempts, last: "
                                f"{e['last_flush_error']})")
        if problems:
            return "Storage: " + "; ".join(problems)
        free = {nid: e["free_bytes"] for nid, e in engines.items()
                if isinstance(e.get("free_bytes"), int)}
        if not free:
            return None
        least = min(free, key=lambda nid: (free[nid], nid))
        return f"Storage: every node accepts writes; least free space {_size(free[least])} ({least})"

    def status_table(self, dc: str) -> Any:
        from rich.table import Table

        table = Table("--", "Address", "Load", "Tokens", "Owns (effective)", "Host ID", "Rack",
                      box=None, pad_edge=False)
        for n in sorted(self.nodes, key=lambda n: str(n["node_id"])):
            if str(n.get("dc", "dc1")) != dc:
                continue
            nid = str(n["node_id"])
            table.add_row(self.code(n), f"{n.get('host')}:{n.get('port')}", _size(self.loads.get(nid)),
                          str(len(n.get("tokens") or ())), f"{100 * self.owns.get(nid, 0):.1f}%",
                          nid, str(n.get("rack", "rack1")))
        return table

    def ownership_table(self) -> Any:
        from rich.table import Table

        table = Table("Host ID", "State", "Address", "DC", "Rack", "Tokens",
                      "Owns (primary)", "Owns (effective)", box=None, pad_edge=False)
        for n in sorted(self.nodes, key=lambda n: str(n["node_id"])):
            nid = str(n["node_id"])
            table.add_row(nid, self.code(n), f"{n.get('host')}:{n.get('port')}", str(n.get("dc", "dc1")),
                          str(n.get("rack", "rack1")), str(len(n.get("tokens") or ())),
                          f"{100 * self.primary.get(nid, 0):.1f}%",
                          f"{100 * self.owns.get(nid, 0):.1f}%")
        return table

    def ranges_table(self, limit: int | None) -> Any:
        from rich.table import Table

        ranges = self.ring.ranges()
        shown = ranges if limit is None else ranges[:limit]
        more = len(ranges) - len(shown)
        caption = f"{more} more ranges (--all lists every one)" if more else None
        table = Table("Range start (exclusive)", "Range end (token)", "Replicas", box=None,
                      pad_edge=False, caption=caption, caption_justify="left")
        for start, end in shown:
            table.add_row(str(start), str(end), ", ".join(self.ring.replicas(end)))
        return table

    def as_dict(self, ranges: bool = False) -> dict:
        nodes = [{"node_id": str(n["node_id"]), "code": self.code(n), "state": n.get("state"),
                  "address": f"{n.get('host')}:{n.get('port')}", "dc": n.get("dc", "dc1"),
                  "rack": n.get("rack", "rack1"), "tokens": len(n.get("tokens") or ()),
                  "load": self.loads.get(str(n["node_id"])),
                  "authenticated": _flag(self.statuses.get(str(n["node_id"])), "authenticated"),
                  "tls": _flag(self.statuses.get(str(n["node_id"])), "tls"),
                  "free_bytes": _engine_field(self.statuses.get(str(n["node_id"])), "free_bytes"),
                  "storage_full": _engine_field(self.statuses.get(str(n["node_id"])), "storage_full"),
                  "owns": self.owns.get(str(n["node_id"]), 0.0),
                  "owns_primary": self.primary.get(str(n["node_id"]), 0.0)}
                 for n in sorted(self.nodes, key=lambda n: str(n["node_id"]))]
        out: dict[str, Any] = {"source": self.source, "replication": self.ring.replication, "nodes": nodes}
        if ranges:
            out["ranges"] = [{"start": s, "end": e, "replicas": self.ring.replicas(e)}
                             for s, e in self.ring.ranges()]
        return out


def _status_of(address: str) -> dict | None:
    """A node's ``status`` reply, or None if it does not answer."""
    try:
        reply = lc.rpc_call(address, "status", timeout=1.0)
    except RingkvError:
        return None
    return reply if isinstance(reply, dict) else None


def _load_in(status: dict | None) -> int | None:
    """The data size a ``status`` reply reports (None: no reply, or none in it)."""
    for key in ("load", "load_bytes", "disk_bytes", "data_bytes"):
        if status is not None and isinstance(status.get(key), (int, float)):
            return int(status[key])
    return None


def _flag(status: dict | None, key: str) -> bool | None:
    return None if status is None else bool(status.get(key))


def _engine_field(status: dict | None, key: str) -> Any:
    return None if status is None else (status.get("engine") or {}).get(key)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return "?"


def pending_hints(view: "ClusterView") -> dict[str, dict[str, int]]:
    """Per node that answered: the hints it holds per target (its ``status`` reply,
    docs/hints.md)."""
    return {nid: dict((st.get("hints") or {}).get("pending") or {})
            for nid, st in view.statuses.items() if st is not None}


def console() -> Any:
    """A rich console: full width on a terminal, 200 columns into a pipe."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)
