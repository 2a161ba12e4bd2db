"""``ringkv decommission``, ``ringkv removenode``, ``ringkv streams`` and the join/replace flags.

The node runs the operation (ringkv/topology.py); these start it with one RPC and follow
its progress through the ``streams`` RPC, printing one line whenever it changes, until it
is done, failed, or ``timeout`` passed. A decommissioned node exits once it is done, so a
node that stops answering right after reporting ``done`` is the expected end.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

from ringkv import localcluster as lc
from ringkv.config import RingkvConfig
from ringkv.errors import RingkvError

POLL_S = 0.5
FAILED_POLLS = 40  # a failure that persists this many polls (20 s) ends the wait
Say = Callable[[str], None]


def with_membership_flags(config: RingkvConfig, join: bool | None,
                          replace_id: str | None) -> RingkvConfig:
    """``server --join`` / ``--replace ID`` laid over the config's [streaming] section."""
    changes: dict[str, Any] = {}
    if join:
        changes["join"] = True
    if replace_id:
        changes["replace"] = replace_id
    if not changes:
        return config
    return replace(config, streaming=replace(config.streaming, **changes)).validate()


def line(s: dict) -> str:
    """One progress line of a ``streams`` reply."""
    if not s:
        return "no membership operation on this node"
    what = f"{s['op']} of {s['subject']}" + (f" (replacing {s['replacing']})" if s.get("replacing") else "")
    text = (f"{what}: {s['status']}, {s['tasks_done']}/{s['tasks']} ranges ({s['percent']}%), "
            f"{s['keys']} keys, {s['bytes']} bytes")
    return text + (f"; error: {s['error']}" if s.get("error") else "")


def follow(address: str, timeout: float, say: Say,
           gone_ok: Callable[[], bool] | None = None) -> dict:
    """Poll ``streams`` until done/failed; print each change. The last reply.

    ``gone_ok`` is asked when the node stops answering: True means it left as planned."""
    deadline = time.monotonic() + timeout
    last: dict = {}
    shown = ""
    failed_polls = 0
    while True:
        try:
            last = lc.rpc_call(address, "streams", timeout=3.0)
        except RingkvError:
            if gone_ok is not None and (last.get("status") in ("finishing", "done") or gone_ok()):
                say(f"{address} stopped answering: decommissioned nodes exit when done")
                return dict(last, status="done")
            raise
        text = line(last)
        if text != shown:
            say(text)
            shown = text
        if not last or last.get("status") == "done":
            return last
        failed_polls = failed_polls + 1 if last.get("status") == "failed" else 0
        if failed_polls > FAILED_POLLS:  # the node retries a failed operation a few times
            raise RingkvError(line(last))
        if time.monotonic() > deadline:
            raise RingkvError(f"{line(last)}: still running after {timeout:g}s "
                              "('ringkv streams --wait' follows it further)")
        time.sleep(POLL_S)


def run_decommission(address: str, wait: bool, timeout: float, say: Say) -> dict:
    peers = [f"{n['host']}:{n['port']}" for n in lc.rpc_call(address, "ring", timeout=5.0)["nodes"]]
    started = lc.rpc_call(address, "decommission", timeout=5.0)
    subject = started.get("subject")
    say(f"decommission of {subject} started on {address}")
    if not wait:
        return started
    others = [p for p in peers if p != address]
    return follow(address, timeout, say, gone_ok=lambda: _seen_removed(subject, others))


def _seen_removed(node_id: object, peers: list[str], wait_s: float = 15.0) -> bool:
    """Whether some peer's ring shows ``node_id`` removed (gossip may need a few rounds).

    A node exits right after its decommission completes, possibly between two polls; its
    peers are then the ones who can tell success from a crash."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for peer in peers:
            try:
                nodes = lc.rpc_call(peer, "ring", timeout=2.0)["nodes"]
            except (RingkvError, KeyError):
                continue
            if any(n.get("node_id") == node_id and n.get("state") == "removed" for n in nodes):
                return True
            if all(n.get("node_id") != node_id for n in nodes):
                return True  # peers forgot it: removed members leave the ring view
        time.sleep(POLL_S)
    return False


def run_removenode(address: str, node_id: str, wait: bool, timeout: float, say: Say) -> dict:
    started = lc.rpc_call(address, "removenode", {"node_id": node_id}, timeout=5.0)
    say(f"removenode of {node_id} started on {address}: its ranges are re-replicated "
        "from the surviving replicas")
    return follow(address, timeout, say) if wait else started


def show_streams(address: str, wait: bool, timeout: float, say: Say) -> dict:
    if wait:
        return follow(address, timeout, say)
    reply = lc.rpc_call(address, "streams", timeout=3.0)
    say(line(reply))
    return reply


__all__ = ["with_membership_flags", "run_decommission", "run_removenode", "show_streams",
           "follow", "line"]
