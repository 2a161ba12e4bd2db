"""A/B of storage settings or builds on a 3-node local cluster: CPU per operation.

Starts ``ringkv cluster up --nodes 3 --rf 3`` (from ``--venv``, default this checkout's
.venv), adds ``--storage`` and ``--node`` lines to each node's ``[storage]`` and ``[node]``
tables, restarts it, warms it up with puts, then runs one bounded load phase of the shared
load generator (``bench/loadgen.py``, token-aware client, 50 clients, W or R = 2) and
prints one line: ops/s, the nodes' CPU per operation (all threads, from /proc), the load
generator's, and commit-log fsyncs per operation (from each node's ``/status``). On a
machine shared with other work, ops/s follow the neighbours; CPU per operation is the
figure to compare, in interleaved runs. Stops the cluster it started. Traffic stays on
127.0.0.1.

    python bench/settings_ab.py                                   # defaults, puts
    python bench/settings_ab.py --storage "group_commit_window_us = 2000;group_commit_min_writes = 2"
    python bench/settings_ab.py --node "gc_young_threshold = 200000"
    python bench/settings_ab.py --op get --venv /path/to/other/checkout/.venv
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cluster import free_base_port, process_cpu_seconds  # noqa: E402


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as r:
        return json.load(r)


def with_table(toml_text: str, table: str, lines: list[str]) -> str:
    """``toml_text`` with each ``key = value`` of ``lines`` in its ``[table]``, replacing
    a line the table already has for that key (a TOML key may appear only once); the table
    is added when the file has none."""
    head = f"[{table}]"
    keys = {ln.split("=")[0].strip() for ln in lines}
    out, inside = [], False
    for ln in toml_text.splitlines():
        if ln.startswith("["):
            inside = ln.strip() == head
        elif inside and ln.split("=")[0].strip() in keys:
            continue
        out.append(ln)
        if ln.strip() == head:
            out += [x.strip() for x in lines]
    if not any(ln.strip() == head for ln in out):
        out += ["", head] + [x.strip() for x in lines]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storage", default="", help="'key = value' lines for [storage], ';'-separated")
    ap.add_argument("--node", default="", help="'key = value' lines for [node], ';'-separated")
    ap.add_argument("--op", choices=("put", "get"), default="put")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds of the measured phase")
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--venv", default=str(HERE.parent / ".venv"), help="the build to run")
    a = ap.parse_args()
    venv = Path(a.venv)
    ringkv, python = str(venv / "bin" / "ringkv"), str(venv / "bin" / "python")
    loadgen = str(venv.parent / "bench" / "loadgen.py")
    if not Path(loadgen).exists():
        loadgen = str(HERE / "loadgen.py")
    d = Path(tempfile.mkdtemp(prefix="ringkv-ab-"))
    base = free_base_port("127.0.0.1", 3)
    up = [ringkv, "cluster", "up", "--nodes", "3", "--rf", "3", "--base-port", str(base), "--dir", str(d)]
    down = [ringkv, "cluster", "down", "--dir", str(d)]
    try:
        subprocess.run(up, capture_output=True, check=True, timeout=120)
        subprocess.run(down, capture_output=True, check=True, timeout=120)
        for table, lines in (("storage", a.storage), ("node", a.node)):
            for i in (1, 2, 3) if lines else ():
                p = d / f"n{i}" / "node.toml"
                p.write_text(with_table(p.read_text(), table, lines.split(";")))
        subprocess.run(up, capture_output=True, check=True, timeout=120)
        pids = [int(p.read_text()) for p in sorted(d.glob("n*/*.pid"))] or [
            int(subprocess.check_output(["pgrep", "-f", f"{d}/n{i}/node.toml"]).split()[0])
            for i in (1, 2, 3)]
        http = [base + 1000 + i for i in range(3)]
        fsyncs = lambda: sum(_status(p)["engine"]["fsyncs"] for p in http)  # noqa: E731
        lg = [python, loadgen, "run", "--mode", "client", "--addr", f"127.0.0.1:{base}",
              "--concurrency", "50", "--keys", str(a.keys), "--level", "2"]
        subprocess.run(lg + ["--op", "put", "--duration", "1" if a.op == "put" else "4"],
                       capture_output=True, timeout=120)
        c0, f0 = process_cpu_seconds(pids), fsyncs()
        res = subprocess.run(lg + ["--op", a.op, "--duration", str(a.duration)],
                             capture_output=True, text=True, timeout=a.duration + 120)
        c1, f1 = process_cpu_seconds(pids), fsyncs()
        out = json.loads(res.stdout)
        ops = out["ops"]
        label = "; ".join(x for x in (a.storage, a.node) if x) or "defaults"
        print(f"{label:50s} {a.op} {ops / out['elapsed']:8.0f}/s  "
              f"server CPU/op {1e6 * (c1 - c0) / ops:6.1f} us  loadgen {1e6 * out['cpu'] / ops:5.1f} us  "
              f"fsyncs/op {(f1 - f0) / ops:.3f}  ({venv})")
    finally:
        subprocess.run(down, capture_output=True, timeout=120)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
