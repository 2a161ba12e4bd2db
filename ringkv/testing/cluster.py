"""Start N real ringkv node processes on loopback, with free ports, and tear them down.

A small library for integration tests, benchmarks and tools::

    cluster = start(5, tmp_dir, dcs=["dc1", "dc1", "dc1", "dc2", "dc2"],
                    replication={"dc1": 2, "dc2": 1})
    cluster.nodes[0].address          # "127.0.0.1:41234"
    cluster.kill(1); cluster.restart(1); cluster.pause(2); cluster.resume(2)
    cluster.close()                   # or use it as a context manager

Layout under ``base_dir``: ``n<i>/ringkv.toml`` (the node's config), ``n<i>/data/`` (its
data directory, identity included) and ``n<i>/node.log`` (stdout and stderr, appended
across restarts). Each node runs ``python -m ringkv.server --config n<i>/ringkv.toml`` in
its own session; ports are picked free at start and kept for restarts. ``start`` returns
once every node printed its ready line and every node's ``/ring`` (HTTP) lists all nodes
alive; any failure raises :class:`ClusterError` with the tail of the node's log.

Nothing here sleeps for a fixed time: every wait polls a condition against a deadline.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import tomli_w

from ringkv.testing.process import NodeProcess

UP_STATES = ("normal", "joining", "leaving")


class ClusterError(Exception):
    """A node failed to start, stop or become ready in time."""


@dataclass
class NodeHandle(NodeProcess):
    """One node process of a :class:`Cluster`."""

    index: int
    node_id: str
    host: str
    port: int
    http_port: int
    resp_port: int
    dc: str
    root: Path
    proc: subprocess.Popen | None = None
    paused: bool = False
    wanted: bool = False  # started by us and not stopped/killed since
    log_offset: int = field(default=0, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def http_json(self, path: str, timeout: float = 2.0) -> Any:
        """GET ``path`` from this node's HTTP API and decode the JSON body."""
        url = f"http://{self.host}:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())


class Cluster:
    """Handle on the node processes started by :func:`start`."""

    def __init__(self, base_dir: Path, nodes: list[NodeHandle], python: str) -> None:
        self.base_dir, self.nodes, self.python = base_dir, nodes, python

    # -- lookups -------------------------------------------------------------------

    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def node(self, which: "int | str | NodeHandle") -> NodeHandle:
        """A node by index, node id (or the handle itself)."""
        if isinstance(which, NodeHandle):
            return which
        if isinstance(which, int):
            return self.nodes[which]
        for n in self.nodes:
            if n.node_id == which:
                return n
        raise KeyError(which)

    # -- processes -----------------------------------------------------------------

    def start_node(self, which: int | str) -> NodeHandle:
        """Start one node's process (it must not be running); does not wait."""
        node = self.node(which)
        if node.running:
            raise ClusterError(f"{node.node_id} is already running")
        node.spawn([self.python, "-m", "ringkv.server", "--config", str(node.config_path)])
        node.wanted = True
        return node

    def stop(self, which: int | str, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); the exit code."""
        node = self.node(which)
        node.wanted = False
        self._signal(node, signal.SIGTERM)
        return self._reap(node, timeout)

    def kill(self, which: int | str) -> int | None:
        """SIGKILL and wait: a crash, nothing flushed."""
        node = self.node(which)
        node.wanted = False
        self._signal(node, signal.SIGKILL)
        return self._reap(node, 10.0)

    def pause(self, which: int | str) -> None:
        """SIGSTOP: the process stays, its sockets stay open, it answers nothing."""
        node = self.node(which)
        self._signal(node, signal.SIGSTOP)
        node.paused = True

    def resume(self, which: int | str) -> None:
        """SIGCONT after :meth:`pause`."""
        node = self.node(which)
        self._signal(node, signal.SIGCONT)
        node.paused = False

    def restart(self, which: int | str, timeout: float = 60.0) -> NodeHandle:
        """Stop (if running) and start again with the same config; wait until it serves
        and every running node sees every running node alive."""
        node = self.node(which)
        if node.running:
            self.stop(node.index)
        self.start_node(node.index)
        self.wait_ready(timeout)
        return node

    def close(self) -> None:
        """Kill every node (resuming paused ones first so they can die)."""
        for node in self.nodes:
            node.wanted = False
            if node.running:
                self._signal(node, signal.SIGCONT)
                self._signal(node, signal.SIGKILL)
        for node in self.nodes:
            self._reap(node, 10.0)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _signal(self, node: NodeHandle, sig: int) -> None:
        node.send(sig)

    def _reap(self, node: NodeHandle, timeout: float) -> int | None:
        return node.reap(timeout)

    # -- waiting -------------------------------------------------------------------

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every started node printed its ready line and every started, unpaused node
        sees all of them alive."""
        deadline = time.monotonic() + timeout
        wanted = [n for n in self.nodes if n.wanted]
        for node in wanted:
            wait_until(lambda node=node: self._printed_ready(node), deadline,
                       lambda node=node: f"{node.node_id} to serve\n{node.log_tail()}")
        expected = {n.node_id for n in wanted if not n.paused}
        for node in [n for n in wanted if not n.paused]:
            wait_until(lambda node=node: expected <= set(self.alive_seen_by(node)), deadline,
                       lambda node=node: f"{node.node_id} to see {sorted(expected)} alive "
                                         f"(sees {self.alive_seen_by(node)})\n{node.log_tail()}")

    def alive_seen_by(self, which: int | str) -> list[str]:
        """Node ids the node's ``/ring`` lists in an up state ([] if it does not answer)."""
        node = self.node(which)
        try:
            ring = node.http_json("/ring")
        except (OSError, ValueError, urllib.error.URLError):
            return []
        return sorted(n["node_id"] for n in ring["nodes"] if n.get("state") in UP_STATES)

    def _printed_ready(self, node: NodeHandle) -> bool:
        if node.proc is not None and node.proc.poll() is not None:
            raise ClusterError(f"{node.node_id} exited with {node.proc.returncode}; "
                               f"log {node.log_path}:\n{node.log_tail()}")
        return node.printed_ready()


def wait_until(cond: Callable[[], Any], deadline: float, what: Callable[[], str] | str,
               interval: float = 0.05) -> Any:
    """Poll ``cond`` until it returns something truthy or ``deadline`` (monotonic) passes."""
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


# Listening ports come from below the kernel's ephemeral range (32768-60999 on Linux):
# a port the kernel picked for us and we released can be taken again at once as the local
# end of some outgoing connection, and the node then fails to bind it. 31000-32700 is kept
# apart from the 20000-31000 the CLI tests use for whole clusters.
_PORT_RANGE = (31000, 32700)
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, not handed out before by this process."""
    import random

    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise ClusterError(f"no free port in {_PORT_RANGE} on {host}")


def start(n: int, base_dir: str | Path, *, dcs: Sequence[str] | None = None,
          racks: Sequence[str] | None = None, replication: dict[str, int] | None = None,
          num_tokens: int = 16, host: str = "127.0.0.1", config: dict[str, dict] | None = None,
          python: str = sys.executable, timeout: float = 60.0, wait: bool = True) -> Cluster:
    """Start ``n`` nodes under ``base_dir``; node i (0-based) is ``n{i+1}`` in ``dcs[i]``.

    ``config`` adds TOML sections/fields to every node's config (e.g.
    ``{"cluster": {"request_timeout_ms": 1000}}``). All nodes use the first one (and the
    second, if any) as seeds. With ``wait`` (default) returns once the cluster formed."""
    base = Path(base_dir).resolve()
    dcs = list(dcs or ["dc1"] * n)
    racks = list(racks or ["rack1"] * n)
    if len(dcs) != n or len(racks) != n:
        raise ValueError("dcs and racks need one entry per node")
    replication = replication or {"dc1": min(3, n)}
    nodes = [NodeHandle(i, f"n{i + 1}", host, free_port(host), free_port(host), free_port(host),
                        dcs[i], base / f"n{i + 1}") for i in range(n)]
    seeds = [nd.address for nd in nodes[:2]]
    for nd, rack in zip(nodes, racks):
        _write_config(nd, rack, [s for s in seeds if s != nd.address], replication,
                      num_tokens, config or {})
    cluster = Cluster(base, nodes, python)
    try:
        for nd in nodes:
            cluster.start_node(nd.index)
        if wait:
            cluster.wait_ready(timeout)
    except BaseException:
        cluster.close()
        raise
    return cluster


def _write_config(node: NodeHandle, rack: str, seeds: list[str], replication: dict[str, int],
                  num_tokens: int, extra: dict[str, dict]) -> None:
    cfg: dict[str, dict[str, Any]] = {
        "node": {"node_id": node.node_id, "host": node.host, "port": node.port,
                 "http_port": node.http_port, "resp_port": node.resp_port, "data_dir": str(node.data_dir), "seeds": seeds,
                 "dc": node.dc, "rack": rack, "num_tokens": num_tokens},
        "cluster": {"replication": dict(replication)},
        "storage": {"memtable_bytes": 4 * 1024 * 1024},
    }
    for section, values in extra.items():
        cfg.setdefault(section, {}).update(values)
    node.root.mkdir(parents=True, exist_ok=True)
    node.config_path.write_text(tomli_w.dumps(cfg))


__all__ = ["Cluster", "NodeHandle", "ClusterError", "start", "wait_until", "free_port"]
