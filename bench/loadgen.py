"""Shared asyncio load generator for ringkv benchmarks (and the bare-server baseline).

Many coroutines ("clients"), each with one request in flight, share a few pipelined
connections; every loop is bounded by an operation count and a deadline. Latencies go
into a log-bucket histogram (1% resolution) so several worker processes can be merged.

As a program (one JSON line on stdout)::

    python bench/loadgen.py run --mode raw|client --addr 127.0.0.1:7400 --op put|get \\
        --duration 5 --concurrency 50 --keys 10000 --value-size 100
    python bench/loadgen.py serve-bare --port 7500     # the bare RpcServer baseline

``--mode raw`` sends ``put``/``get`` RPCs straight to ``--addr`` with RpcClient (used for
the bare server); ``--mode client`` goes through the token-aware AsyncClient, whose seeds
are ``--addr`` (comma separated).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ringkv.errors import RingkvError  # noqa: E402

BUCKETS_PER_E = 100  # log buckets: bucket k covers [e^(k/100), e^((k+1)/100)) microseconds


@dataclass
class Histogram:
    """Latency histogram in microseconds; mergeable across processes."""

    counts: dict[int, int] = field(default_factory=dict)
    total: int = 0

    def record(self, seconds: float) -> None:
        us = seconds * 1e6
        k = int(math.log(us) * BUCKETS_PER_E) if us > 1.0 else 0
        self.counts[k] = self.counts.get(k, 0) + 1
        self.total += 1

    def merge(self, other: "Histogram") -> None:
        for k, n in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + n
        self.total += other.total

    def percentile_ms(self, p: float) -> float:
        if not self.total:
            return 0.0
        rank, seen = p / 100.0 * self.total, 0
        for k in sorted(self.counts):
            seen += self.counts[k]
            if seen >= rank:
                return math.exp((k + 0.5) / BUCKETS_PER_E) / 1000.0
        return 0.0

    def to_json(self) -> dict:
        return {"counts": {str(k): n for k, n in self.counts.items()}, "total": self.total}

    @classmethod
    def from_json(cls, data: dict) -> "Histogram":
        return cls({int(k): n for k, n in data["counts"].items()}, data["total"])


@dataclass
class Result:
    ops: int = 0
    errors: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0  # CPU seconds the load generator itself used (all its processes)
    server_cpu: float = 0.0  # CPU seconds the servers used meanwhile (set by bench/cluster.py)
    hist: Histogram = field(default_factory=Histogram)
    error_kinds: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"ops": self.ops, "errors": self.errors, "elapsed": self.elapsed, "cpu": self.cpu,
                "hist": self.hist.to_json(), "error_kinds": self.error_kinds}

    @classmethod
    def merge_json(cls, parts: list[dict]) -> "Result":
        out = cls()
        for p in parts:
            out.ops += p["ops"]
            out.errors += p["errors"]
            out.elapsed = max(out.elapsed, p["elapsed"])
            out.cpu += p.get("cpu", 0.0)
            out.hist.merge(Histogram.from_json(p["hist"]))
            for k, n in p["error_kinds"].items():
                out.error_kinds[k] = out.error_kinds.get(k, 0) + n
        return out

    def summary(self) -> dict:
        rate = self.ops / self.elapsed if self.elapsed else 0.0
        return {"ops_per_s": round(rate, 1), "ops": self.ops, "errors": self.errors,
                "p50_ms": round(self.hist.percentile_ms(50), 3),
                "p99_ms": round(self.hist.percentile_ms(99), 3),
                "loadgen_cpu": round(self.cpu / self.elapsed, 2) if self.elapsed else 0.0}


async def drive(op: Callable[[int], Awaitable[object]], *, concurrency: int, duration: float,
                max_ops: int, max_errors: int = 10_000) -> Result:
    """Run ``op(i)`` from ``concurrency`` coroutines until max_ops or duration is reached."""
    res = Result()
    counter = iter(range(max_ops))
    clock = time.perf_counter
    deadline = clock() + duration

    async def worker() -> None:
        record = res.hist.record
        for i in counter:
            t0 = clock()
            if t0 >= deadline or res.errors >= max_errors:
                return
            try:
                await op(i)
            except RingkvError as exc:
                res.errors += 1
                name = type(exc).__name__
                res.error_kinds[name] = res.error_kinds.get(name, 0) + 1
                continue
            record(clock() - t0)
            res.ops += 1

    start, cpu0 = clock(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    res.elapsed = clock() - start
    res.cpu = time.process_time() - cpu0
    return res


def key_of(i: int, keys: int) -> bytes:
    return b"bench:%08d" % (i % keys)


async def run_load(mode: str, addrs: list[str], op_name: str, *, duration: float,
                   concurrency: int, keys: int, value_size: int, max_ops: int,
                   connections: int = 1, offset: int = 0, level: int | str | None = 2) -> Result:
    """One load phase from this process against ``addrs``."""
    value = os.urandom(value_size // 2).hex().encode()[:value_size].ljust(value_size, b"v")
    from ringkv.net import auth, tls

    # a secured cluster (D32, D33): the secret and the TLS CA from the environment, as the CLI
    secret, ssl = auth.secret_from_env(), tls.context_from_env()
    if mode == "raw":
        from ringkv.net.transport import RpcClient

        rpc = RpcClient(connections_per_peer=connections, secret=secret, ssl=ssl)
        host, port = addrs[0].rsplit(":", 1)
        p = int(port)

        async def op(i: int) -> object:
            k = key_of(i + offset, keys)
            body = {"key": k, "value": value, "context": None, "w": level, "ttl": None} \
                if op_name == "put" else {"key": k, "r": level}
            return await rpc.call(host, p, op_name, body, 5.0)

        close = rpc.close
    else:
        from ringkv.client import AsyncClient

        client = AsyncClient(addrs, connections_per_peer=connections, timeout=5.0, secret=secret,
                             ssl=ssl)
        await client.connect()

        async def op(i: int) -> object:
            k = key_of(i + offset, keys)
            if op_name == "put":
                return await client.put(k, value, w=level)
            return await client.get(k, r=level)

        close = client.close
    try:
        return await drive(op, concurrency=concurrency, duration=duration, max_ops=max_ops)
    finally:
        await close()


# ---------------------------------------------------------------- bare baseline server


def bare_handler(value_size: int = 100) -> Callable[[str, dict, str], dict]:
    """A trivial handler answering like a node (same message shapes), no work behind it."""
    get_reply = {"values": [b"v" * value_size], "context": b"\x00" * 16}
    put_reply = {"context": b"\x00" * 16}

    def handler(method: str, body: dict, peer: str) -> dict:
        if method == "get":
            return get_reply
        if method == "put":
            return put_reply
        return {}

    return handler


async def serve_bare(host: str, port: int, value_size: int, use_async: bool,
                     eager: bool = False, tls_files: tuple[str, str] | None = None,
                     secret_file: str | None = None) -> None:
    """The bare server; with ``tls_files`` (cert, key) it serves TLS, with ``secret_file``
    it requires the cluster-secret handshake (bench/rpc_security.py)."""
    from ringkv.net import auth, tls
    from ringkv.net.transport import RpcServer

    fast = bare_handler(value_size)

    async def slow(method: str, body: dict, peer: str) -> dict:
        return fast(method, body, peer)

    ssl = tls.server_context(*tls_files) if tls_files else None
    secret = auth.read_secret_file(secret_file) if secret_file else None
    server = await RpcServer(slow if use_async else fast, host, port, eager=eager, ssl=ssl,
                             secret=secret).start()
    print(json.dumps({"listening": f"{host}:{server.port}"}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def _install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--mode", choices=("raw", "client"), default="client")
    run.add_argument("--addr", required=True)
    run.add_argument("--op", choices=("put", "get"), required=True)
    run.add_argument("--duration", type=float, default=5.0)
    run.add_argument("--concurrency", type=int, default=50)
    run.add_argument("--keys", type=int, default=10_000)
    run.add_argument("--value-size", type=int, default=100)
    run.add_argument("--max-ops", type=int, default=10_000_000)
    run.add_argument("--connections", type=int, default=1)
    run.add_argument("--offset", type=int, default=0)
    run.add_argument("--level", default="2", help="W for puts, R for gets (number or name)")
    srv = sub.add_parser("serve-bare")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=0)
    srv.add_argument("--value-size", type=int, default=100)
    srv.add_argument("--async-handler", action="store_true")
    srv.add_argument("--eager", action="store_true", help="RpcServer(eager=True)")
    srv.add_argument("--tls-cert", help="serve TLS with this PEM certificate (and --tls-key)")
    srv.add_argument("--tls-key")
    srv.add_argument("--secret-file", help="require the cluster-secret handshake")
    args = ap.parse_args(argv)
    _install_uvloop()
    if args.cmd == "serve-bare":
        try:
            asyncio.run(serve_bare(args.host, args.port, args.value_size, args.async_handler,
                                   args.eager, (args.tls_cert, args.tls_key) if args.tls_cert else None,
                                   args.secret_file))
        except KeyboardInterrupt:
            pass
        return 0
    res = asyncio.run(run_load(args.mode, args.addr.split(","), args.op, duration=args.duration,
                               concurrency=args.concurrency, keys=args.keys,
                               value_size=args.value_size, max_ops=args.max_ops,
                               connections=args.connections, offset=args.offset,
                               level=int(args.level) if args.level.isdigit() else args.level))
    print(json.dumps(res.to_json()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
