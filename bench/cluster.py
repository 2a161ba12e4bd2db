"""Cluster benchmark: a 3-node local ringkv cluster against the bare-server baseline.

What it does, in one run (every phase bounded by time and by operation count):
- bare baseline: ``bench/loadgen.py serve-bare`` in its own process (ringkv's RpcServer
  with a trivial handler answering put/get in the same message shapes as a node): the
  most a Python request/response server does on this machine with this framing.
- cluster: ``python -m ringkv.cli cluster up --nodes 3 --rf 3 --dir D`` (commit log in
  its default ``batch`` mode), loaded through the token-aware ``AsyncClient`` with W=2
  (puts of 100-byte values) and R=2 (gets of the keys written); ``cluster down`` at the end.
- phases, the two targets taking turns so both see the same background load: warm-up
  puts on each, bare puts, cluster puts, bare gets, cluster gets.
The load generator runs in separate process(es) (``--procs``), 50 coroutines in all, each
with one request in flight, sharing one connection per node. Human-readable lines go to
stderr; stdout ends with ONE line of JSON: put_ops, get_ops (ops/s), put/get p50/p99 in
ms, bare_put_ops, bare_get_ops, put_vs_bare, get_vs_bare, errors, put/get_cpu_us_per_op
(CPU of the nodes and the load generator per operation: the figure to compare runs by
on a machine shared with other work, where ops/s follow the neighbours), settings.

    python bench/cluster.py --quick          # < 60 s
    python bench/cluster.py                  # longer phases
    python bench/cluster.py --cli "python /tmp/standin.py"   # another cluster launcher
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _common as C  # noqa: E402
from loadgen import Result  # noqa: E402

LOADGEN = str(HERE / "loadgen.py")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def process_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system, all threads) the processes used so far; 0 for gone ones."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run_phase(a: argparse.Namespace, mode: str, addrs: list[str], op: str, duration: float,
              keys: int, pids: list[int] | None = None) -> Result:
    """One load phase from ``a.procs`` loadgen processes; merged result. With ``pids``
    (the server processes), ``res.server_cpu`` is the CPU seconds they used meanwhile."""
    cpu0 = process_cpu_seconds(pids or [])
    per = [a.concurrency // a.procs + (1 if i < a.concurrency % a.procs else 0)
           for i in range(a.procs)]
    procs = []
    for i, conc in enumerate(per):
        cmd = [sys.executable, LOADGEN, "run", "--mode", mode, "--addr", ",".join(addrs),
               "--op", op, "--duration", str(duration), "--concurrency", str(conc),
               "--keys", str(keys), "--value-size", str(a.value_size),
               "--max-ops", str(a.max_ops // a.procs), "--connections", str(a.connections),
               "--offset", str(i * 7919), "--level", str(a.level)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    parts = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=duration + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if p.returncode != 0 or not lines:
            raise RuntimeError(f"loadgen failed (exit {p.returncode}): {err.strip()[-2000:]}")
        parts.append(json.loads(lines[-1]))
    res = Result.merge_json(parts)
    res.server_cpu = process_cpu_seconds(pids or []) - cpu0
    return res


def report(label: str, op: str, res: Result) -> dict:
    s = res.summary()
    ops = max(1, res.ops)
    # CPU per operation: on a shared machine ops/s move with the neighbours' load, the
    # CPU each operation costs much less so (it is the figure to compare A/B runs by).
    s["server_cpu_us_per_op"] = round(res.server_cpu / ops * 1e6, 1)
    s["loadgen_cpu_us_per_op"] = round(res.cpu / ops * 1e6, 1)
    say(f"{label:8} {op}: {C.fmt_ops(s['ops_per_s'])} ops/s  p50 {s['p50_ms']:.2f} ms  "
        f"p99 {s['p99_ms']:.2f} ms  errors {s['errors']} {res.error_kinds or ''} "
        f"(loadgen used {s['loadgen_cpu']:.0%} of a core; CPU per op: servers "
        f"{s['server_cpu_us_per_op']:.1f} us, loadgen {s['loadgen_cpu_us_per_op']:.1f} us)")
    return s | {"error_kinds": res.error_kinds}


def interleaved(a: argparse.Namespace,
                targets: dict[str, tuple[str, list[str], list[int]]]) -> dict:
    """Puts on every target, then gets of the keys written; targets take turns per op,
    so the bare server and the cluster see the same background load. A target is
    (loadgen mode, addresses, server pids)."""
    out: dict[str, dict] = {label: {} for label in targets}
    written: dict[str, int] = {}
    for label, (mode, addrs, _pids) in targets.items():
        if a.warmup > 0:
            run_phase(a, mode, addrs, "put", a.warmup, a.keys)
    for op in ("put", "get"):
        for label, (mode, addrs, pids) in targets.items():
            keys = a.keys if op == "put" else written[label]
            res = run_phase(a, mode, addrs, op, a.duration, keys, pids)
            if op == "put":
                written[label] = max(1, min(a.keys, res.ops))
            out[label][op] = report(label, op, res)
    return out


# ---------------------------------------------------------------- bare baseline


class BareServer:
    """``loadgen.py serve-bare`` in its own process (context manager); ``.addr`` once up."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.cmd = [sys.executable, LOADGEN, "serve-bare", "--port", "0",
                    "--value-size", str(a.value_size)] + (["--async-handler"] if a.bare_async else [])
        self.proc: subprocess.Popen | None = None
        self.addr = ""

    def __enter__(self) -> "BareServer":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("{"):
            self.__exit__()
            raise RuntimeError("bare server did not start")
        self.addr = json.loads(line)["listening"]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- the cluster


def free_base_port(host: str, nodes: int, start: int = 17400) -> int:
    """A base port where node ports base..base+n-1 and their HTTP ports (+1000) are free."""
    from ringkv.localcluster import port_free

    for base in range(start, start + 2000, 10):
        if all(port_free(host, base + i) and port_free(host, base + i + 1000) for i in range(nodes)):
            return base
    raise RuntimeError("no free port range for the cluster")


def cluster_cli(a: argparse.Namespace, *args: str, timeout: float) -> None:
    cmd = shlex.split(a.cli) + list(args)
    say("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, cwd=HERE.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")


def cluster_addresses(directory: Path) -> list[str]:
    state = json.loads((directory / "cluster.json").read_text())
    return [f"{n['host']}:{n['port']}" for n in state["nodes"]]


def cluster_pids(directory: Path) -> list[int]:
    """The node processes' pids, if the launcher records them (``cluster.json``)."""
    state = json.loads((directory / "cluster.json").read_text())
    return [int(n["pid"]) for n in state["nodes"] if n.get("pid")]


def measure(a: argparse.Namespace) -> dict:
    """Bring up the bare server and the cluster, run the interleaved phases, tear down."""
    directory = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="ringkv-bench-"))
    base = a.base_port or free_base_port("127.0.0.1", a.nodes)
    up = False
    try:
        with BareServer(a) as bare:
            started = time.monotonic()
            cluster_cli(a, "cluster", "up", "--nodes", str(a.nodes), "--rf", str(a.rf),
                        "--dir", str(directory), "--base-port", str(base),
                        "--timeout", str(a.up_timeout), timeout=a.up_timeout + 30)
            up = True
            say(f"cluster up in {time.monotonic() - started:.1f}s ({directory})")
            assert bare.proc is not None
            return interleaved(a, {"bare": ("raw", [bare.addr], [bare.proc.pid]),
                                   "cluster": ("client", cluster_addresses(directory),
                                               cluster_pids(directory))})
    finally:
        if up or (directory / "cluster.json").exists():
            try:
                cluster_cli(a, "cluster", "down", "--dir", str(directory), "--grace", "5", timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                say(f"cluster down failed: {exc}")
        if not a.dir and not a.keep:
            shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------- main


def _cpu(phase: dict) -> float:
    """Servers' plus load generator's CPU microseconds per operation of one phase."""
    return round(phase.get("server_cpu_us_per_op", 0.0) + phase.get("loadgen_cpu_us_per_op", 0.0), 1)


def summarize(a: argparse.Namespace, bare: dict, cl: dict, seconds: float) -> dict:
    def ratio(x: float, y: float) -> float:
        return round(x / y, 3) if y else 0.0

    return {
        "put_ops": cl["put"]["ops_per_s"], "get_ops": cl["get"]["ops_per_s"],
        "put_p50_ms": cl["put"]["p50_ms"], "put_p99_ms": cl["put"]["p99_ms"],
        "get_p50_ms": cl["get"]["p50_ms"], "get_p99_ms": cl["get"]["p99_ms"],
        "put_errors": cl["put"]["errors"], "get_errors": cl["get"]["errors"],
        "put_cpu_us_per_op": _cpu(cl["put"]), "get_cpu_us_per_op": _cpu(cl["get"]),
        "bare_put_ops": bare["put"]["ops_per_s"], "bare_get_ops": bare["get"]["ops_per_s"],
        "bare_p99_ms": max(bare["put"]["p99_ms"], bare["get"]["p99_ms"]),
        "put_vs_bare": ratio(cl["put"]["ops_per_s"], bare["put"]["ops_per_s"]),
        "get_vs_bare": ratio(cl["get"]["ops_per_s"], bare["get"]["ops_per_s"]),
        "nodes": a.nodes, "rf": a.rf, "level": a.level, "concurrency": a.concurrency,
        "procs": a.procs, "value_bytes": a.value_size, "phase_s": a.duration,
        "quick": a.quick, "seconds": round(seconds, 1),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short phases: the run ends within 60 s")
    ap.add_argument("--duration", type=float, help="seconds per load phase (default 15, quick 4)")
    ap.add_argument("--warmup", type=float, help="seconds of puts before measuring (default 2, quick 0.5)")
    ap.add_argument("--concurrency", type=int, default=50, help="concurrent clients in all")
    ap.add_argument("--procs", type=int, default=1, help="load generator processes")
    ap.add_argument("--connections", type=int, default=1, help="connections per node per process")
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--keys", type=int, default=100_000, help="key space of the put phase")
    ap.add_argument("--max-ops", type=int, default=5_000_000, help="bound on ops per phase")
    ap.add_argument("--level", default="2", help="W of puts and R of gets")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--rf", type=int, default=3)
    ap.add_argument("--dir", help="cluster directory (default: a fresh temporary one, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary cluster directory")
    ap.add_argument("--base-port", type=int, default=0, help="first node's port (default: a free range)")
    ap.add_argument("--up-timeout", type=float, default=30.0)
    ap.add_argument("--cli", default=f"{shlex.quote(sys.executable)} -m ringkv.cli",
                    help="command that provides 'cluster up|down'")
    ap.add_argument("--bare-async", action="store_true",
                    help="bare server with an async def handler instead of the sync fast path")
    a = ap.parse_args(argv)
    a.duration = a.duration or (4.0 if a.quick else 15.0)
    a.warmup = a.warmup if a.warmup is not None else (0.5 if a.quick else 2.0)
    a.procs = max(1, min(a.procs, a.concurrency))
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    t0 = time.monotonic()
    say(C.machine_line())
    say(f"{a.nodes} nodes, rf {a.rf}, W=R={a.level}, {a.concurrency} clients in {a.procs} "
        f"loadgen process(es), {a.value_size}-byte values, {a.duration:g}s per phase")
    zero = {op: {"ops_per_s": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "errors": 0}
            for op in ("put", "get")}
    try:
        res = measure(a)
        bare, cl, failed = res["bare"], res["cluster"], ""
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        say(f"run failed: {exc}")
        bare, cl, failed = zero, zero, str(exc).splitlines()[0][:300]
    s = summarize(a, bare, cl, time.monotonic() - t0)
    if failed:
        s["failed"] = failed
    say(f"get_vs_bare {s['get_vs_bare']:.3f} (target >= 0.2), "
        f"put_vs_bare {s['put_vs_bare']:.3f} (target >= 0.1), {s['seconds']}s in all")
    print(json.dumps(s, separators=(",", ":")), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
