"""What the cluster secret (D32) and TLS (D33) cost a request on the RPC transport.

The bare server of ``bench/cluster.py`` (``bench/loadgen.py serve-bare``: ringkv's
RpcServer with a trivial handler, in its own process) in four setups, plain, secret, TLS
and both, each loaded by the same load generator (``loadgen.py run --mode raw``, 50
coroutines on one connection, 100-byte puts), in interleaved rounds so every setup sees
the same host. Per setup: requests/s and the CPU per request of the server process and
of the load generator (from /proc), the mean over the rounds, and the ratio to plain.
Certificates come from a throwaway CA (trustme); traffic stays on 127.0.0.1. The last
line of stdout is one JSON object with every figure.

    python bench/rpc_security.py                 # 3 rounds of 5 s per setup
    python bench/rpc_security.py --rounds 5 --duration 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402
from cluster import process_cpu_seconds  # noqa: E402

LOADGEN = str(HERE / "loadgen.py")
SETUPS = ("plain", "secret", "tls", "both")


def make_files(d: Path) -> dict[str, str]:
    files = C.write_test_pki(str(d))
    files["secret"] = str(d / "secret")
    Path(files["secret"]).write_text(os.urandom(32).hex() + "\n")
    return files


def one_phase(setup: str, files: dict[str, str], a: argparse.Namespace) -> dict:
    """Start the bare server in ``setup``, load it for one phase, stop it."""
    serve = [sys.executable, LOADGEN, "serve-bare", "--port", "0", "--eager"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RINGKV_TLS_", "RINGKV_SECRET"))}
    if setup in ("secret", "both"):
        serve += ["--secret-file", files["secret"]]
        env["RINGKV_SECRET_FILE"] = files["secret"]
    if setup in ("tls", "both"):
        serve += ["--tls-cert", files["cert"], "--tls-key", files["key"]]
        env["RINGKV_TLS_CA_FILE"] = files["ca"]
    srv = subprocess.Popen(serve, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = srv.stdout.readline() if srv.stdout else ""
        addr = json.loads(line)["listening"]
        run = [sys.executable, LOADGEN, "run", "--mode", "raw", "--addr", addr, "--op", "put",
               "--concurrency", "50", "--keys", "10000", "--max-ops", str(a.max_ops)]
        subprocess.run(run + ["--duration", "1"], capture_output=True, env=env, timeout=60)  # warm
        c0 = process_cpu_seconds([srv.pid])
        out = subprocess.run(run + ["--duration", str(a.duration)], capture_output=True,
                             text=True, env=env, timeout=a.duration + 60)
        c1 = process_cpu_seconds([srv.pid])
        res = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        srv.terminate()
        srv.wait(10)
    ops = res["ops"]
    return {"ops_s": ops / res["elapsed"], "server_us": 1e6 * (c1 - c0) / ops,
            "loadgen_us": 1e6 * res["cpu"] / ops, "errors": res["errors"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    ap.add_argument("--max-ops", type=int, default=2_000_000, help="bound per phase")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ringkv-rpcsec-") as tmp:
        files = make_files(Path(tmp))
        runs: dict[str, list[dict]] = {s: [] for s in SETUPS}
        for r in range(a.rounds):
            order = SETUPS[r % len(SETUPS):] + SETUPS[:r % len(SETUPS)]  # rotate: no setup always first
            for setup in order:
                res = one_phase(setup, files, a)
                runs[setup].append(res)
                print(f"round {r + 1} {setup:6s} {res['ops_s']:9,.0f} req/s  server {res['server_us']:5.1f} us"
                      f"  loadgen {res['loadgen_us']:5.1f} us  errors {res['errors']}", file=sys.stderr)
    mean = {s: {k: sum(x[k] for x in v) / len(v) for k in ("ops_s", "server_us", "loadgen_us")}
            for s, v in runs.items()}
    summary: dict = {"rounds": a.rounds, "duration_s": a.duration, "setups": mean}
    for s in SETUPS:
        m = mean[s]
        summary[f"{s}_vs_plain_ops"] = round(m["ops_s"] / mean["plain"]["ops_s"], 3)
        summary[f"{s}_vs_plain_server_cpu"] = round(m["server_us"] / mean["plain"]["server_us"], 3)
        print(f"{s:6s} mean {m['ops_s']:9,.0f} req/s ({summary[f'{s}_vs_plain_ops']:.3f}x plain)  "
              f"server {m['server_us']:5.1f} us/req ({summary[f'{s}_vs_plain_server_cpu']:.3f}x)  "
              f"loadgen {m['loadgen_us']:5.1f} us/req", file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
