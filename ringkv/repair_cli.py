"""``ringkv repair``: start a repair job on a node and show its progress until it ends.

The node runs the job (RPC ``repair``); this polls ``repair_status`` and draws a progress
bar (a rich bar on a terminal, one line per change otherwise), then prints a summary.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

from ringkv import localcluster as lc
from ringkv.antientropy import parse_range
from ringkv.errors import RingkvError

POLL_S = 0.5


def run_repair(address: str, range_text: str | None, timeout: float,
               say: Callable[[str], None]) -> dict:
    """Run one repair on ``address`` and report; the final status (raises on failure)."""
    body: dict[str, Any] = {}
    if range_text:
        body["start"], body["end"] = parse_range(range_text)
    started = lc.rpc_call(address, "repair", body, timeout=5.0)
    if started.get("already_running"):
        say(f"a repair is already running on {address} (job {started['id']}); following it")
    status = _follow(address, started["id"], timeout, say)
    say(summary(status))
    if status["state"] != "done":
        raise RingkvError(f"repair {status['state']}: " + "; ".join(status.get("errors") or []))
    return status


def _follow(address: str, job_id: int, timeout: float, say: Callable[[str], None]) -> dict:
    deadline = time.monotonic() + timeout
    if sys.stdout.isatty():
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("repair", total=None)
            return _poll(address, job_id, deadline,
                         lambda s: bar.update(task, total=s["ranges_total"] or None,
                                              completed=s["ranges_done"], description=line(s)))
    last = [""]

    def show(s: dict) -> None:
        text = line(s)
        if text != last[0]:
            say(text)
            last[0] = text

    return _poll(address, job_id, deadline, show)


def _poll(address: str, job_id: int, deadline: float, show: Callable[[dict], None]) -> dict:
    while True:
        status = lc.rpc_call(address, "repair_status", {"id": job_id}, timeout=5.0)
        show(status)
        if status["state"] != "running":
            return status
        if time.monotonic() > deadline:
            raise RingkvError(f"repair job {job_id} still running after the timeout "
                              f"(it goes on; 'ringkv repair' again follows it)")
        time.sleep(POLL_S)


def line(s: dict) -> str:
    return (f"ranges {s['ranges_done']}/{s['ranges_total']}  sessions {s['sessions']}  "
            f"keys sent {s['keys_sent']} received {s['keys_received']}  "
            f"bytes {s['bytes_sent'] + s['bytes_received']}")


def summary(s: dict) -> str:
    skipped = f", {s['skipped_peers']} down peers skipped" if s.get("skipped_peers") else ""
    return (f"repair {s['state']}: {s['ranges_done']}/{s['ranges_total']} ranges, "
            f"{s['sessions']} sessions{skipped}, keys sent {s['keys_sent']}, "
            f"received {s['keys_received']}, compared {s['keys_compared']}, "
            f"bytes sent {s['bytes_sent']}, received {s['bytes_received']}, "
            f"{s['seconds']:.2f} s (trees {s['build_seconds']:.2f} s: "
            f"{s.get('tree_refreshes', 0)} refreshed, {s.get('tree_full_builds', 0)} built, "
            f"{s.get('keys_rescanned', 0)} keys rescanned)")


__all__ = ["run_repair", "line", "summary"]
