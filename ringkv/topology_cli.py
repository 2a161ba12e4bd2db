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


def follow(address: str, timeout: float, say: Say, gone_ok: bool = False) -> dict:
    """Poll ``streams`` until done/failed; print each change. The last reply."""
    deadline = time.monotonic() + timeout
    last: dict = {}
    shown = ""
    failed_polls = 0
    while True:
        try:
            last = lc.rpc_call(address, "streams", timeout=3.0)
        except RingkvError:
            if gone_ok and last.get("status") in ("finishing", "done"):
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
    started = lc.rpc_call(address, "decommission", timeout=5.0)
    say(f"decommission of {started.get('subject')} started on {address}")
    return follow(address, timeout, say, gone_ok=True) if wait else started


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
