"""A/B of storage settings or builds on a 3-node local cluster: CPU per operation.

Starts ``ringkv cluster up --nodes 3 --rf 3`` (from ``--venv``, default this checkout's
.venv), adds ``--storage`` and ``--node`` lines to each node's ``[storage]`` and ``[node]``
tables, restarts it, warms it up with puts, then runs one bounded load phase of the shared
load generator (``bench/loadgen.py``, token-aware client, 50 clients, W or R = 2) and
prints one line: ops/s, the nodes' CPU per operation (all threads, from /proc), the load
generator's, and commit-log fsyncs per operation (from each node's ``/status``). On a
machine shared with other work, ops/s follow the neighbours; CPU per operation is the
figure to compare, in interleaved runs. Stops the cluster it started. Traffic stays on
127.0.0.1. ``--secure`` starts the cluster with a cluster secret (D32), TLS on every port
(D33, certificates from a throwaway CA made with trustme), or both; the load generator
then authenticates and speaks TLS too.

    python bench/settings_ab.py                                   # defaults, puts
    python bench/settings_ab.py --storage "group_commit_window_us = 2000;group_commit_min_writes = 2"
    python bench/settings_ab.py --node "gc_young_threshold = 200000"
    python bench/settings_ab.py --op get --venv /path/to/other/checkout/.venv
    python bench/settings_ab.py --secure tls        # none (default), secret, tls, both
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402
from cluster import free_base_port, process_cpu_seconds  # noqa: E402


def _status(port: int, ca_file: str | None = None) -> dict:
    if ca_file is None:
        url, ctx = f"http://127.0.0.1:{port}/status", None
    else:
        url, ctx = f"https://127.0.0.1:{port}/status", ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
        return json.load(r)


def secure_options(mode: str, d: Path) -> tuple[list[str], dict[str, str], str | None]:
    """``cluster up`` flags, load generator environment and CA file for ``--secure``."""
    flags: list[str] = []
    env: dict[str, str] = {}
    ca_file = None
    if mode in ("secret", "both"):
        secret = d / "secret"
        secret.write_text(os.urandom(32).hex() + "\n")
        flags += ["--secret-file", str(secret)]
        env["RINGKV_SECRET_FILE"] = str(secret)
    if mode in ("tls", "both"):
        pki = C.write_test_pki(str(d))
        ca_file = pki["ca"]
        flags += ["--tls-cert-file", pki["cert"], "--tls-key-file", pki["key"], "--tls-ca-file", ca_file]
        env["RINGKV_TLS_CA_FILE"] = ca_file
    return flags, env, ca_file


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
    ap.add_argument("--secure", choices=("none", "secret", "tls", "both"), default="none",
                    help="cluster secret and/or TLS on the cluster and the load generator")
    a = ap.parse_args()
    venv = Path(a.venv)
    ringkv, python = str(venv / "bin" / "ringkv"), str(venv / "bin" / "python")
    loadgen = str(venv.parent / "bench" / "loadgen.py")
    if not Path(loadgen).exists():
        loadgen = str(HERE / "loadgen.py")
    d = Path(tempfile.mkdtemp(prefix="ringkv-ab-"))
    base = free_base_port("127.0.0.1", 3)
    sec_flags, sec_env, ca_file = secure_options(a.secure, d)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RINGKV_SECRET_FILE", "RINGKV_TLS_CA_FILE")} | sec_env
    up = [ringkv, "cluster", "up", "--nodes", "3", "--rf", "3", "--base-port", str(base), "--dir",
          str(d / "c")]
    down = [ringkv, "cluster", "down", "--dir", str(d / "c")]
    try:
        subprocess.run(up + sec_flags, capture_output=True, check=True, timeout=120, env=env)
        subprocess.run(down, capture_output=True, check=True, timeout=120)
        for table, lines in (("storage", a.storage), ("node", a.node)):
            for i in (1, 2, 3) if lines else ():
                p = d / "c" / f"n{i}" / "node.toml"
                p.write_text(with_table(p.read_text(), table, lines.split(";")))
        subprocess.run(up, capture_output=True, check=True, timeout=120, env=env)
        pids = [int(p.read_text()) for p in sorted(d.glob("c/n*/*.pid"))] or [
            int(subprocess.check_output(["pgrep", "-f", f"{d}/c/n{i}/node.toml"]).split()[0])
            for i in (1, 2, 3)]
        http = [base + 1000 + i for i in range(3)]
        fsyncs = lambda: sum(_status(p, ca_file)["engine"]["fsyncs"] for p in http)  # noqa: E731
        lg = [python, loadgen, "run", "--mode", "client", "--addr", f"127.0.0.1:{base}",
              "--concurrency", "50", "--keys", str(a.keys), "--level", "2"]
        subprocess.run(lg + ["--op", "put", "--duration", "1" if a.op == "put" else "4"],
                       capture_output=True, timeout=120, env=env)
        c0, f0 = process_cpu_seconds(pids), fsyncs()
        res = subprocess.run(lg + ["--op", a.op, "--duration", str(a.duration)],
                             capture_output=True, text=True, timeout=a.duration + 120, env=env)
        c1, f1 = process_cpu_seconds(pids), fsyncs()
        out = json.loads(res.stdout)
        ops = out["ops"]
        label = "; ".join(x for x in (a.storage, a.node) if x) or "defaults"
        if a.secure != "none":
            label += f" [secure: {a.secure}]"
        print(f"{label:50s} {a.op} {ops / out['elapsed']:8.0f}/s  "
              f"server CPU/op {1e6 * (c1 - c0) / ops:6.1f} us  loadgen {1e6 * out['cpu'] / ops:5.1f} us  "
              f"fsyncs/op {(f1 - f0) / ops:.3f}  ({venv})")
    finally:
        subprocess.run(down, capture_output=True, timeout=120, env=env)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
