"""Three nodes, each in its own network namespace with its own address, over real interfaces.

Topology (all created by this test, removed in ``finally`` even on failure; names carry a
per-run tag so concurrent runs do not collide)::

    netns rkvb-<tag>:  bridge br0 ── v1 ── v2 ── v3
                                      │     │     │   (veth pairs)
    netns rkv1-<tag>:  eth0 10.231.0.1/24   │     │
    netns rkv2-<tag>:        eth0 10.231.0.2/24   │
    netns rkv3-<tag>:              eth0 10.231.0.3/24

The 10.231.0.0/24 addresses exist only inside these namespaces: they are the project's own
test hosts and nothing else is contacted. Each node runs as ``ip netns exec rkvI-<tag>
python -m ringkv.cli server ...``. The test shows the cluster forms (every node's ring
lists 3 nodes up) and that a put at one node and a get at another work across the bridge.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_root

pytestmark = pytest.mark.root

NODES = 3
PORT = 7400
ADDRESSES = [f"10.231.0.{i}" for i in range(1, NODES + 1)]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Namespaces:
    """The bridge namespace and one namespace per node; ``remove`` undoes everything."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.bridge = f"rkvb-{tag}"
        self.nodes = [f"rkv{i}-{tag}" for i in range(1, NODES + 1)]
        self.created: list[str] = []

    def create(self) -> None:
        for ns in [self.bridge, *self.nodes]:
            ip("netns", "add", ns)
            self.created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge, "link", "set", "br0", "up")
        for i, (ns, addr) in enumerate(zip(self.nodes, ADDRESSES), 1):
            ip("-n", self.bridge, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
               "netns", ns)
            ip("-n", self.bridge, "link", "set", f"v{i}", "master", "br0")
            ip("-n", self.bridge, "link", "set", f"v{i}", "up")
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")

    def remove(self) -> list[str]:
        """Delete every namespace created (their veths and the bridge go with them)."""
        errors = []
        for ns in reversed(self.created):
            result = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if result.returncode != 0:
                errors.append(f"ip netns del {ns}: {result.stderr.strip()}")
        self.created.clear()
        return errors


def start_node(ns: str, i: int, data: Path) -> tuple[subprocess.Popen, Path]:
    addr = ADDRESSES[i - 1]
    seeds = ",".join(f"{a}:{PORT}" for a in ADDRESSES if a != addr)
    log = data / f"n{i}.log"
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "ringkv.cli", "server",
           "--node-id", f"n{i}", "--host", addr, "--port", str(PORT),
           "--data-dir", str(data / f"n{i}"), "--seeds", seeds]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return proc, log


def cli_in(ns: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "ringkv.cli", *args],
                          capture_output=True, text=True, timeout=60)


def wait_for(what: str, predicate, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout:g}s\n{tails(logs)}")
        time.sleep(0.2)


def tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {p}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-25:])
                     for p in logs if p.exists())


def ring_complete(ns: str, addr: str) -> bool:
    result = cli_in(ns, "ring", "--json", "--host", f"{addr}:{PORT}")
    if result.returncode != 0:
        return False
    nodes = json.loads(result.stdout)["nodes"]
    return sorted(n["address"] for n in nodes if n["code"].startswith("U")) == \
        sorted(f"{a}:{PORT}" for a in ADDRESSES)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_cluster_forms_and_serves_across_namespaces(tmp_path):
    require_root()
    if shutil.which("ip") is None:
        pytest.fail("root, but the 'ip' command (iproute2) is missing")
    nets = Namespaces()
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    try:
        nets.create()
        for i, ns in enumerate(nets.nodes, 1):
            proc, log = start_node(ns, i, tmp_path)
            procs.append(proc)
            logs.append(log)
        for proc, log in zip(procs, logs):
            wait_for(f"{log.stem} serving", lambda: b"serving on" in log.read_bytes()
                     or proc.poll() is not None, 60, logs)
            assert proc.poll() is None, f"{log.stem} exited with {proc.returncode}\n{tails(logs)}"
        for ns, addr in zip(nets.nodes, ADDRESSES):
            wait_for(f"{addr}'s ring listing {NODES} nodes up",
                     lambda ns=ns, addr=addr: ring_complete(ns, addr), 60, logs)

        put = cli_in(nets.nodes[0], "put", "netns-key", "across", "--w", "ALL",
                     "--host", f"{ADDRESSES[0]}:{PORT}")
        assert put.returncode == 0, f"{put.stderr}\n{tails(logs)}"
        get = cli_in(nets.nodes[2], "get", "netns-key", "--r", "ALL", "--host", f"{ADDRESSES[2]}:{PORT}")
        assert get.returncode == 0, f"{get.stderr}\n{tails(logs)}"
        assert get.stdout == "across\n"
        status = cli_in(nets.nodes[1], "status", "--host", f"{ADDRESSES[1]}:{PORT}")
        assert status.stdout.count("UN ") == NODES, status.stdout
    finally:
        try:
            stop(procs)
        finally:
            errors = nets.remove()
    assert not errors, errors
