"""The systems bench/compare.py starts and stops: Redis, Redis Cluster, etcd, ringkv.

Each :class:`System` has ``start(procs, dir, args) -> Handle`` and ``stop(procs, handle)``.
Every process goes through :class:`Procs`, which starts it in its own session and stops
exactly the processes it started (SIGTERM, then SIGKILL after a grace period), also on
the way out of a failed run. Every wait polls a condition against a deadline.

Also a program: ``python bench/compare_systems.py serve-resp-node --dir D --port P
--resp-port R`` runs one ringkv Node with a RespServer in front of it (the fallback used
while ``ringkv server`` does not open a RESP port itself).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            got = cond()
            if got:
                return got
        except Exception as exc:  # the thing is not up yet
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} ({last!r})")


class Procs:
    """The processes this run started; stops only those."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []

    def spawn(self, cmd: list[str], log: Path) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        self.live.append(p)
        return p

    def stop(self, procs: list[subprocess.Popen], grace: float = 10.0) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            if p in self.live:
                self.live.remove(p)

    def stop_all(self) -> None:
        self.stop(list(self.live))


@dataclass
class Handle:
    resp_addr: str | None = None  # where redis-benchmark goes
    resp_cluster: bool = False  # redis-benchmark --cluster
    loadgen: str | None = None  # "etcd" | "ringkv" | None
    addrs: list[str] = field(default_factory=list)  # load generator targets
    level: int = 1  # ringkv W and R of the load generator
    procs: list[subprocess.Popen] = field(default_factory=list)
    cluster: Any = None  # a ringkv.testing.cluster.Cluster
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class System:
    name: str
    describe: str
    start: Callable[[Procs, Path, Any], Handle]
    fallback_resp: "System | None" = None  # measures RESP when the system's handle has no resp_addr

    def stop(self, procs: Procs, handle: Handle) -> None:
        procs.stop(handle.procs)
        if handle.cluster is not None:
            handle.cluster.close()


# ---------------------------------------------------------------- Redis


def redis_ping(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


def redis_server(procs: Procs, d: Path, port: int, *extra: str) -> subprocess.Popen:
    d.mkdir(parents=True, exist_ok=True)
    p = procs.spawn(["redis-server", "--port", str(port), "--bind", HOST, "--dir", str(d),
                     "--save", "", "--protected-mode", "no", "--daemonize", "no", *extra],
                    d / "redis.log")
    wait_for(lambda: redis_ping(port), 20, f"redis-server on {port}")
    return p


def start_redis(fsync: bool) -> Callable[[Procs, Path, Any], Handle]:
    def start(procs: Procs, d: Path, a: Any) -> Handle:
        port = free_port()
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if fsync else ["--appendonly", "no"]
        return Handle(resp_addr=f"{HOST}:{port}", procs=[redis_server(procs, d, port, *aof)])
    return start


def port_pair_free(port: int) -> bool:
    """Both ``port`` and its cluster bus port (``port + 10000``) can be bound."""
    try:
        for p in (port, port + 10000):
            with socket.socket() as s:
                s.bind((HOST, p))
        return True
    except OSError:
        return False


def cluster_ports(count: int, start: int = 21000) -> list[int]:
    """Ports whose bus port (+10000) is valid and free (an OS-chosen port may be > 55535)."""
    ports: list[int] = []
    port = start + os.getpid() % 2000
    while len(ports) < count and port < 30000:
        if port_pair_free(port):
            ports.append(port)
        port += 1
    if len(ports) < count:
        raise RuntimeError("no free ports for the redis cluster")
    return ports


def start_redis_cluster(procs: Procs, d: Path, a: Any) -> Handle:
    ports = cluster_ports(6)
    handle = Handle(resp_addr=f"{HOST}:{ports[0]}", resp_cluster=True)
    for port in ports:
        handle.procs.append(redis_server(procs, d / str(port), port, "--cluster-enabled", "yes",
                                         "--cluster-config-file", "nodes.conf",
                                         "--appendonly", "yes", "--appendfsync", "always"))
    subprocess.run(["redis-cli", "--cluster", "create", *[f"{HOST}:{p}" for p in ports],
                    "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True,
                   timeout=60)

    def ok() -> bool:
        for p in ports:
            info = subprocess.run(["redis-cli", "-p", str(p), "cluster", "info"], capture_output=True,
                                  text=True, timeout=5).stdout
            if "cluster_state:ok" not in info:
                return False
        return True

    wait_for(ok, 60, "redis cluster state ok")
    return handle


# ---------------------------------------------------------------- etcd


def start_etcd(n: int) -> Callable[[Procs, Path, Any], Handle]:
    def start(procs: Procs, d: Path, a: Any) -> Handle:
        client = [free_port() for _ in range(n)]
        peer = [free_port() for _ in range(n)]
        initial = ",".join(f"e{i}=http://{HOST}:{peer[i]}" for i in range(n))
        handle = Handle(loadgen="etcd", addrs=[f"{HOST}:{c}" for c in client])
        for i in range(n):
            handle.procs.append(procs.spawn([
                "etcd", "--name", f"e{i}", "--data-dir", str(d / f"e{i}"),
                "--listen-client-urls", f"http://{HOST}:{client[i]}",
                "--advertise-client-urls", f"http://{HOST}:{client[i]}",
                "--listen-peer-urls", f"http://{HOST}:{peer[i]}",
                "--initial-advertise-peer-urls", f"http://{HOST}:{peer[i]}",
                "--initial-cluster", initial, "--initial-cluster-token", "ringkv-compare",
                "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn"],
                d / f"e{i}.log"))
        for c in client:
            wait_for(lambda c=c: b'"true"' in urllib.request.urlopen(
                f"http://{HOST}:{c}/health", timeout=2).read(), 30, f"etcd on {c}")
        return handle
    return start


# ---------------------------------------------------------------- ringkv


def start_ringkv(n: int) -> Callable[[Procs, Path, Any], Handle]:
    level = 2 if n >= 3 else 1

    def start(procs: Procs, d: Path, a: Any) -> Handle:
        from ringkv.testing import cluster as tc

        lvl = "QUORUM" if n >= 3 else "ONE"
        config = {"cluster": {"read_level": lvl, "write_level": lvl},
                  "storage": {"sync_mode": "batch", "memtable_bytes": 32 * 1024 * 1024}}
        handle = Handle(loadgen="ringkv", level=level)
        handle.cluster = tc.start(n, d, replication={"dc1": min(3, n)}, config=config, timeout=90)
        handle.addrs = handle.cluster.addresses()
        handle.resp_addr = _native_resp_addr(handle.cluster)
        return handle
    return start


def _native_resp_addr(cluster: Any) -> str | None:
    """The first node's RESP address, if the node reports one in its HTTP status."""
    try:
        status = cluster.nodes[0].http_json("/status")
    except Exception:
        return None
    port = status.get("resp_port") if isinstance(status, dict) else None
    return f"{HOST}:{port}" if port else None


def start_ringkv1_resp(procs: Procs, d: Path, a: Any) -> Handle:
    """Fallback RESP front for one node, in a process of its own."""
    port, resp_port = free_port(), free_port()
    p = procs.spawn([sys.executable, __file__, "serve-resp-node", "--dir", str(d), "--port", str(port),
                     "--resp-port", str(resp_port)], d / "node.log")
    wait_for(lambda: redis_ping(resp_port), 60, "ringkv RESP node")
    return Handle(resp_addr=f"{HOST}:{resp_port}", procs=[p])


FALLBACK_RESP = System("ringkv1-resp", "1 ringkv node + RespServer in one process (fallback "
                       "launcher: the node does not serve RESP itself yet)", start_ringkv1_resp)

SYSTEMS: dict[str, System] = {
    "redis-fsync": System("redis-fsync", "redis-server, appendonly yes, appendfsync always",
                          start_redis(True)),
    "redis-nofsync": System("redis-nofsync", "redis-server, no AOF, no snapshots", start_redis(False)),
    "redis-cluster": System("redis-cluster", "Redis Cluster, 3 masters + 3 replicas, AOF fsync always",
                            start_redis_cluster),
    "etcd1": System("etcd1", "etcd, 1 member", start_etcd(1)),
    "etcd3": System("etcd3", "etcd, 3 members", start_etcd(3)),
    "ringkv1": System("ringkv1", "1 ringkv node, N=1 W=1 R=1, commit log batch", start_ringkv(1),
                      fallback_resp=FALLBACK_RESP),
    "ringkv3": System("ringkv3", "3 ringkv nodes, N=3 W=2 R=2, commit log batch", start_ringkv(3)),
}


# ---------------------------------------------------------------- fallback RESP node


def serve_resp_node(argv: list[str]) -> None:
    import argparse
    import asyncio
    import types

    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--resp-port", type=int, required=True)
    a = ap.parse_args(argv)

    from ringkv.config import ClusterConfig, NodeConfig, RingkvConfig, StorageConfig
    from ringkv.node import Node
    from ringkv.resp_server import RespServer

    async def main() -> None:
        cfg = RingkvConfig(node=NodeConfig(node_id="n1", port=a.port, data_dir=a.dir),
                           cluster=ClusterConfig(replication={"dc1": 1}, read_level="ONE",
                                                 write_level="ONE"),
                           storage=StorageConfig(sync_mode="batch")).validate()
        node = Node(cfg)
        await node.start()
        ops = types.SimpleNamespace(kv_get=node.get, kv_put=node.put, kv_delete=node.delete)
        server = RespServer(ops, HOST, a.resp_port, cfg.limits, node.status)
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(json.dumps({"resp": server.port}), flush=True)
        await stop.wait()
        await server.stop()
        await node.close()

    import uvloop

    uvloop.run(main())


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve-resp-node"]:
        serve_resp_node(sys.argv[2:])
