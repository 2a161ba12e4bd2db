"""Side by side: ringkv against Redis, Redis Cluster and etcd, with the tools each camp trusts.

Each system is started on 127.0.0.1 in turn, measured, and stopped before the next:

  redis-fsync     one redis-server, appendonly yes, appendfsync always
  redis-nofsync   one redis-server, no AOF, no RDB snapshots
  redis-cluster   6 redis-servers (3 masters + 3 replicas), redis-cli --cluster create,
                  appendonly yes + appendfsync always on each
  etcd1, etcd3    etcd with 1 and 3 members
  ringkv1         1 ringkv node (N=1, W=1, R=1), commit log `batch`
  ringkv3         3 ringkv nodes (N=3, W=2, R=2), commit log `batch`

Workloads:
  redis-benchmark -t set,get -c 50 -d 100 -r 1000000, with -P 1 and with -P 16, against
      every RESP system (ringkv through its RESP port);
  one Python load generator (bench/loadgen.py's ``drive``: 50 coroutines in all, one
      request in flight each, split over --procs processes), 100-byte values, puts then
      gets, each phase bounded by time: against etcd (JSON gRPC gateway; gets are
      linearizable, etcd's default) and ringkv (token-aware AsyncClient).

Human-readable progress and the table go to stderr; stdout ends with ONE line of JSON
holding every measurement and the ratios (ringkv over the peer), among them
put_vs_etcd3, get_vs_etcd3, set_vs_redis_fsync, get_vs_redis_fsync (-P 1) and
set_vs_redis_fsync_p16, get_vs_redis_fsync_p16.

    python bench/compare.py --quick      # within 5 minutes
    python bench/compare.py              # -n 200000 (-P 1) and -n 2000000 (-P 16), longer phases
    python bench/compare.py --only redis-fsync,ringkv1

Needs Debian packages redis-server, redis-tools, etcd-server, etcd-client (installed with
apt-get when missing; root needed then). Everything started is stopped in ``finally``.
When the ringkv node does not serve RESP itself yet (no ``node.resp_port`` in the config),
ringkv1's RESP numbers come from this script's own launcher: a process running one
ringkv Node with a RespServer in front (the same classes), and ringkv3 has no RESP rows.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _common as C  # noqa: E402
from compare_systems import SYSTEMS, Procs, System  # noqa: E402

BINARIES = {"redis-server": "redis-server", "redis-benchmark": "redis-tools", "redis-cli": "redis-tools",
            "etcd": "etcd-server", "etcdctl": "etcd-client"}


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_installed() -> None:
    missing = sorted({pkg for exe, pkg in BINARIES.items() if shutil.which(exe) is None})
    if not missing:
        return
    say(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", *missing]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        subprocess.run(cmd, env=env, check=True, capture_output=True)


# ---------------------------------------------------------------- redis-benchmark


def redis_benchmark(addr: str, pipeline: int, requests: int, cluster: bool = False,
                    timeout: float = 900) -> dict[str, dict[str, float]]:
    host, port = addr.rsplit(":", 1)
    cmd = ["redis-benchmark", "-h", host, "-p", port, "-t", "set,get", "-c", "50", "-d", "100",
           "-r", "1000000", "-n", str(requests), "-P", str(pipeline), "--csv"]
    if cluster:
        cmd.append("--cluster")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    rows: dict[str, dict[str, float]] = {}
    header: list[str] = []
    for line in out.stdout.splitlines():
        cells = [c.strip('"') for c in line.split('","')]
        if cells and cells[0] == "test":
            header = cells
        elif header and len(cells) == len(header):
            rec = dict(zip(header, cells))
            rows[rec["test"].lower()] = {"ops_per_s": float(rec["rps"]),
                                         "p50_ms": float(rec.get("p50_latency_ms", "nan")),
                                         "p99_ms": float(rec.get("p99_latency_ms", "nan"))}
    if not rows:
        raise RuntimeError(f"redis-benchmark gave no results: {out.stderr.strip()[-500:]}")
    return rows


def resp_runs(addr: str, a: argparse.Namespace, cluster: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p, n in ((1, a.n_p1), (16, a.n_p16)):
        left = a.deadline - time.monotonic()
        if left < 10:
            say(f"    redis-benchmark -P {p}: skipped, the time budget ({a.budget:.0f}s) is spent")
            continue
        try:
            rows = redis_benchmark(addr, p, n, cluster, timeout=left)
        except subprocess.TimeoutExpired:
            say(f"    redis-benchmark -P {p}: stopped, it would outlast the time budget")
            continue
        except RuntimeError as exc:  # redis-benchmark stops at the first error reply
            say(f"    redis-benchmark -P {p}: {exc}")
            out[f"error_p{p}"] = str(exc)[:300]
            continue
        for test, r in rows.items():
            out[f"{test}_p{p}"] = r
            say(f"    redis-benchmark -P {p:<2} {test.upper():3}: {C.fmt_ops(r['ops_per_s'])} ops/s "
                f"p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms")
    return out


# ---------------------------------------------------------------- Python load generator


def loadgen_phase(kind: str, addrs: list[str], op: str, a: argparse.Namespace, level: int,
                  keys: int) -> dict[str, Any]:
    from loadgen import Result

    per = [a.concurrency // a.procs + (1 if i < a.concurrency % a.procs else 0) for i in range(a.procs)]
    procs = [subprocess.Popen([sys.executable, __file__, "_worker", kind, ",".join(addrs), op,
                               str(a.duration), str(conc), str(keys), str(a.value_size),
                               str(i * 7919), str(level)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, conc in enumerate(per)]
    parts = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=a.duration + 90)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if p.returncode != 0 or not lines:
            raise RuntimeError(f"load generator failed ({p.returncode}): {err.strip()[-1500:]}")
        parts.append(json.loads(lines[-1]))
    res = Result.merge_json(parts)
    summary = res.summary()
    say(f"    loadgen {op}: {C.fmt_ops(summary['ops_per_s'])} ops/s p50 {summary['p50_ms']:.3f} ms "
        f"p99 {summary['p99_ms']:.3f} ms errors {summary['errors']} {res.error_kinds or ''}")
    return {k: summary[k] for k in ("ops_per_s", "p50_ms", "p99_ms", "errors", "ops")}


def loadgen_runs(kind: str, addrs: list[str], a: argparse.Namespace, level: int) -> dict[str, Any]:
    puts = loadgen_phase(kind, addrs, "put", a, level, a.keys)
    written = max(1, min(a.keys, puts["ops"]))
    return {"put": puts, "get": loadgen_phase(kind, addrs, "get", a, level, written)}


def worker_main(argv: list[str]) -> None:
    """``compare.py _worker KIND ADDRS OP DURATION CONC KEYS VALUE_SIZE OFFSET LEVEL``."""
    from loadgen import drive, key_of

    kind, addrs, op, duration, conc, keys, vsize, offset, level = argv
    duration_s, conc_n, keys_n, offset_n = float(duration), int(conc), int(keys), int(offset)
    value = os.urandom(int(vsize) // 2 + 1).hex().encode()[:int(vsize)]

    async def main() -> dict:
        if kind == "etcd":
            client = EtcdGateway(addrs.split(","), conc_n)
        else:
            from ringkv.client import AsyncClient

            client = AsyncClient(addrs.split(","), timeout=5.0)
            await client.connect()
        lvl = int(level)

        async def one(i: int) -> object:
            k = key_of(i + offset_n, keys_n)
            if kind == "etcd":
                return await (client.put(k, value) if op == "put" else client.get(k))
            return await (client.put(k, value, w=lvl) if op == "put" else client.get(k, r=lvl))

        try:
            res = await drive(one, concurrency=conc_n, duration=duration_s, max_ops=50_000_000)
        finally:
            await client.close()
        return res.to_json()

    try:
        import uvloop

        result = uvloop.run(main())
    except ImportError:
        result = asyncio.run(main())
    print(json.dumps(result), flush=True)


class EtcdGateway:
    """etcd v3 through its JSON gRPC gateway (POST /v3/kv/put, /v3/kv/range), over a pool of
    keep-alive HTTP/1.1 connections written by hand: aiohttp costs several times more
    client CPU per request, and on a 2-core machine the client would be what is measured.
    Errors become ringkv errors so the shared load generator counts them like any other."""

    def __init__(self, addrs: list[str], connections: int) -> None:
        self.addrs = [a.rsplit(":", 1) for a in addrs]
        self.size = connections
        self.pool: asyncio.Queue | None = None
        self.opened: list[asyncio.StreamWriter] = []

    async def _conn(self, i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self.addrs[i % len(self.addrs)]
        reader, writer = await asyncio.open_connection(host, int(port))
        self.opened.append(writer)
        return reader, writer

    async def _post(self, path: bytes, body: bytes) -> bytes:
        from ringkv.errors import Unavailable

        if self.pool is None:
            self.pool = asyncio.Queue()
            for i in range(self.size):
                self.pool.put_nowait(await self._conn(i))
        reader, writer = await self.pool.get()
        try:
            writer.write(b"POST %b HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%b" % (path, len(body), body))
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            data = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError) as exc:
            writer.close()
            self.pool.put_nowait(await self._conn(len(self.opened)))
            raise Unavailable(1, 0, f"etcd: {type(exc).__name__}") from None
        self.pool.put_nowait((reader, writer))
        if not head.startswith(b"HTTP/1.1 200"):
            raise Unavailable(1, 0, f"etcd: {head[:40]!r} {data[:200]!r}")
        return data

    async def put(self, key: bytes, value: bytes) -> bytes:
        return await self._post(b"/v3/kv/put", b'{"key":"%b","value":"%b"}' % (
            base64.b64encode(key), base64.b64encode(value)))

    async def get(self, key: bytes) -> bytes:
        return await self._post(b"/v3/kv/range", b'{"key":"%b"}' % base64.b64encode(key))

    async def close(self) -> None:
        for w in self.opened:
            w.close()


# ---------------------------------------------------------------- the run


def measure(system: System, a: argparse.Namespace, procs: Procs, workdir: Path) -> dict[str, Any]:
    say(f"== {system.name}: {system.describe}")
    t0 = time.monotonic()
    handle = system.start(procs, workdir / system.name, a)
    out: dict[str, Any] = {"start_seconds": round(time.monotonic() - t0, 1)}
    try:
        if handle.resp_addr:
            out["resp"] = resp_runs(handle.resp_addr, a, cluster=handle.resp_cluster)
        if handle.loadgen:
            out["loadgen"] = loadgen_runs(handle.loadgen, handle.addrs, a, handle.level)
        out.update(handle.notes)
    finally:
        system.stop(procs, handle)
    if "resp" not in out and system.fallback_resp is not None:
        fb = system.fallback_resp
        say(f"   RESP through {fb.name}: {fb.describe}")
        handle = fb.start(procs, workdir / fb.name, a)
        try:
            out["resp"] = resp_runs(handle.resp_addr, a)  # type: ignore[arg-type]
            out["resp_via"] = fb.name
        finally:
            fb.stop(procs, handle)
    return out


def ratio(x: float | None, y: float | None) -> float | None:
    if not x or not y:
        return None
    return round(x / y, 3)


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    def ops(sys_: str, path: tuple[str, ...]) -> float | None:
        node: Any = results.get(sys_, {})
        for p in path:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        return node.get("ops_per_s") if isinstance(node, dict) else None

    out: dict[str, float | None] = {}
    for peer, mine, suffix in (("etcd3", "ringkv3", "etcd3"), ("etcd1", "ringkv1", "etcd1")):
        for op in ("put", "get"):
            out[f"{op}_vs_{suffix}"] = ratio(ops(mine, ("loadgen", op)), ops(peer, ("loadgen", op)))
    for peer, mine, suffix in (("redis-fsync", "ringkv1", "redis_fsync"),
                               ("redis-nofsync", "ringkv1", "redis_nofsync"),
                               ("redis-cluster", "ringkv3", "redis_cluster")):
        for test in ("set", "get"):
            for p, tail in ((1, ""), (16, "_p16")):
                out[f"{test}_vs_{suffix}{tail}"] = ratio(ops(mine, ("resp", f"{test}_p{p}")),
                                                         ops(peer, ("resp", f"{test}_p{p}")))
    return out


PEER_OF = {"redis-fsync": "ringkv1", "redis-nofsync": "ringkv1", "redis-cluster": "ringkv3",
           "etcd1": "ringkv1", "etcd3": "ringkv3"}


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, res in results.items():
        if "error" in res:
            rows.append([name, "failed (see log)", "-", "-", "-", "-"])
            continue
        tests = [(f"redis-benchmark {t.split('_')[0].upper()} -P {t.split('_p')[1]}", ("resp", t))
                 for t in ("set_p1", "get_p1", "set_p16", "get_p16") if t in res.get("resp", {})]
        tests += [(f"loadgen {op}", ("loadgen", op)) for op in ("put", "get") if op in res.get("loadgen", {})]
        for label, (group, key) in tests:
            r = res[group][key]
            mine = results.get(PEER_OF.get(name, ""), {}).get(group, {}).get(key, {})
            rows.append([name, label, C.fmt_ops(r["ops_per_s"]), f"{r['p50_ms']:.3f}",
                         f"{r['p99_ms']:.3f}", C.fmt_ratio(ratio(mine.get("ops_per_s"), r["ops_per_s"]))])
    return rows


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small -n and short phases: within 5 minutes")
    ap.add_argument("--only", help="comma-separated systems: " + ",".join(SYSTEMS))
    ap.add_argument("--procs", type=int, default=2, help="load generator processes (50 coroutines in all)")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--keys", type=int, default=100_000, help="distinct keys of the load generator")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown too")
    a = ap.parse_args(argv)
    a.n_p1, a.n_p16 = (20_000, 100_000) if a.quick else (200_000, 2_000_000)
    a.duration = 5.0 if a.quick else 20.0
    a.budget = 270.0 if a.quick else 3600.0  # seconds; a redis-benchmark run may not outlast it
    a.deadline = time.monotonic() + a.budget
    return a


def main(argv: list[str]) -> int:
    if argv[:1] == ["_worker"]:
        worker_main(argv[1:])
        return 0
    a = parse_args(argv)
    started = time.monotonic()
    results: dict[str, Any] = {}
    try:
        run_all(a, results)
    finally:  # whatever happened, the run ends with its table and ONE line of JSON
        report(a, results, started)
    return 0


def run_all(a: argparse.Namespace, results: dict[str, Any]) -> None:
    ensure_installed()
    say(C.machine_line())
    names = a.only.split(",") if a.only else list(SYSTEMS)
    workdir = Path(tempfile.mkdtemp(prefix="ringkv-compare-"))
    procs = Procs()
    try:
        for name in names:
            try:
                results[name] = measure(SYSTEMS[name], a, procs, workdir)
            except Exception as exc:  # one system failing must not lose the others' numbers
                say(f"   {name} failed: {type(exc).__name__}: {exc}")
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def report(a: argparse.Namespace, results: dict[str, Any], started: float) -> None:
    headers = ["system", "test", "ops/s", "p50 ms", "p99 ms", "ringkv / it"]
    rows = table_rows(results)
    say("\n" + C.table(headers, rows))
    if a.markdown:
        say("\n" + C.table(headers, rows, markdown=True))
    summary = ratios(results) | {"seconds": round(time.monotonic() - started, 1),
                                 "quick": a.quick, "machine": C.machine_line(), "results": results}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
