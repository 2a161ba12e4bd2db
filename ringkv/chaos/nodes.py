"""Real ringkv node processes, one per network namespace host of a :class:`Topology`.

Node ``i`` (0-based) is ``n{i+1}``, listens on ``topology.addr(i)``:7400 (HTTP :8400, RESP
off) and runs ``ip netns exec <ns> python -m ringkv.server --config <dir>/n{i+1}/ringkv.toml``.
``ip netns exec`` execs the server, so the process we hold *is* the node: SIGKILL,
SIGSTOP and SIGCONT reach it directly. Logs are appended across restarts to
``<dir>/n{i+1}/node.log``. Nothing here waits for a fixed time: waits poll a condition
against a deadline.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ringkv.chaos.netns import Topology
from ringkv.testing.process import NodeProcess

PORT = 7400
HTTP_PORT = 8400


@dataclass
class NodeProc(NodeProcess):
    """One node: where it lives and its current process."""

    index: int
    node_id: str
    ns: str
    host: str
    root: Path
    dc: str = "dc1"
    proc: subprocess.Popen | None = None
    paused: bool = False
    log_offset: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{PORT}"


class NodeSet:
    """The node processes of one chaos run."""

    def __init__(self, topology: Topology, base_dir: Path, count: int, *,
                 dcs: list[str] | None = None, replication: dict[str, int] | None = None,
                 config: dict[str, dict] | None = None, num_tokens: int = 16,
                 python: str = sys.executable) -> None:
        self.topology, self.base_dir, self.python = topology, Path(base_dir), python
        self.replication = replication or {"dc1": 3}
        self.extra = config or {}
        self.num_tokens = num_tokens
        dcs = dcs or ["dc1"] * count
        self.nodes = [self._handle(i, dcs[i]) for i in range(count)]
        self.seeds = [n.address for n in self.nodes[:2]]

    def _handle(self, i: int, dc: str) -> NodeProc:
        return NodeProc(i, f"n{i + 1}", self.topology.ns(i), self.topology.addr(i),
                        self.base_dir / f"n{i + 1}", dc)

    def add(self, dc: str = "dc1") -> NodeProc:
        """A new node (and host) beyond the initial ones, e.g. to join; not started."""
        i = len(self.nodes)
        self.topology.add_host(i)
        node = self._handle(i, dc)
        self.nodes.append(node)
        return node

    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    def write_config(self, node: NodeProc) -> None:
        cfg: dict[str, dict[str, Any]] = {
            "node": {"node_id": node.node_id, "host": node.host, "port": PORT,
                     "http_port": HTTP_PORT, "resp_port": -1,
                     "data_dir": str(node.root / "data"),
                     "seeds": [s for s in self.seeds if s != node.address],
                     "dc": node.dc, "rack": "rack1", "num_tokens": self.num_tokens},
            "cluster": {"replication": dict(self.replication)},
            "storage": {"memtable_bytes": 4 * 1024 * 1024},
        }
        for section, values in self.extra.items():
            cfg.setdefault(section, {}).update(values)
        node.root.mkdir(parents=True, exist_ok=True)
        node.config_path.write_text(tomli_w.dumps(cfg))

    # -- processes ---------------------------------------------------------------------

    def start(self, i: int, command: list[str] | None = None) -> NodeProc:
        """Start node ``i`` (writing its config on first start); does not wait."""
        node = self.nodes[i]
        if node.running:
            return node
        if not node.config_path.exists():
            self.write_config(node)
        cmd = command or [self.python, "-m", "ringkv.server", "--config", str(node.config_path)]
        node.spawn(["ip", "netns", "exec", node.ns, *cmd])
        return node

    def signal(self, i: int, sig: int) -> None:
        self.nodes[i].send(sig)

    def kill(self, i: int) -> None:
        """SIGKILL and reap: a crash."""
        self.signal(i, signal.SIGKILL)
        self._reap(i, 10.0)

    def stop(self, i: int, timeout: float = 20.0) -> None:
        """SIGTERM (SIGCONT first if paused) and reap, SIGKILL after ``timeout``."""
        self.resume(i)
        self.signal(i, signal.SIGTERM)
        self._reap(i, timeout)

    def pause(self, i: int) -> None:
        self.signal(i, signal.SIGSTOP)
        self.nodes[i].paused = True

    def resume(self, i: int) -> None:
        if self.nodes[i].paused:
            self.signal(i, signal.SIGCONT)
            self.nodes[i].paused = False

    def _reap(self, i: int, timeout: float) -> None:
        self.nodes[i].reap(timeout)

    def serving(self, i: int) -> bool:
        """Whether node ``i``'s current process printed its ready line."""
        return self.nodes[i].printed_ready()

    def wait_serving(self, indexes: list[int], timeout: float) -> None:
        """Every listed node printed its ready line; RuntimeError (with its log) if not."""
        deadline = time.monotonic() + timeout
        for i in indexes:
            while not self.serving(i):
                node = self.nodes[i]
                if not node.running:
                    raise RuntimeError(f"{node.node_id} exited:\n{node.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.node_id} not serving in {timeout}s:\n"
                                       f"{node.log_tail()}")
                time.sleep(0.05)

    def close(self) -> None:
        """Kill every node (paused ones resumed first so they can die)."""
        for node in self.nodes:
            if node.running:
                self.signal(node.index, signal.SIGCONT)
                self.signal(node.index, signal.SIGKILL)
        for node in self.nodes:
            self._reap(node.index, 10.0)


__all__ = ["NodeSet", "NodeProc", "PORT", "HTTP_PORT"]
