"""A local cluster of real node processes: what ``ringkv cluster up|down|status`` drives.

Contract:
- A cluster lives in one directory (default ``.ringkv-cluster``)::

      cluster.json     layout (node ids, ports) and the pid of every node it started
      n1/node.toml     node n1's config, written once (edit it to tune; kept on restart)
      n1/data/         n1's data directory (commit log, SSTables, hints, identity)
      n1/node.log      n1's stdout and stderr, appended across restarts

- :meth:`LocalCluster.up` starts every node that is not running (``python -m ringkv.cli
  server --config n1/node.toml``, each in its own session so a terminal's Ctrl-C reaches
  only the manager) and returns once every node has printed its ready line and every
  node's ring lists all the cluster's nodes. Nodes already running are left alone, so
  ``up`` on an existing directory restarts the stopped nodes with their data. Failure
  raises :class:`LocalClusterError` naming the node and its log file.
- :meth:`LocalCluster.down` sends SIGTERM to every node it started, SIGKILL to any still
  alive after the grace period, and forgets the pids. A pid counts as ours only while its
  command line names our node's config file, so a reused pid is never signalled.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import tomli_w

from ringkv.errors import RingkvError
from ringkv.net import auth

STATE_FILE = "cluster.json"
DEFAULT_DIR = ".ringkv-cluster"
DEFAULT_BASE_PORT = 7400
HTTP_PORT_OFFSET = 1000  # node i listens on base_port + i - 1 and, for HTTP, 1000 above that
READY_RE = re.compile(rb"ringkv node (\S+) serving on (\S+)")
Say = Callable[[str], None]


class LocalClusterError(Exception):
    """Starting, stopping or finding a local cluster failed; the message says what to do."""


@dataclass
class LocalNode:
    """One node of a local cluster, as recorded in cluster.json."""

    node_id: str
    host: str
    port: int
    http_port: int
    pid: int | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


_FROM_DEFAULTS = object()  # rpc_call's secret/ssl not given: default_secret()/default_tls()


def rpc_call(address: str, method: str, body: dict | None = None, timeout: float = 2.0,
             secret: Any = _FROM_DEFAULTS, ssl: Any = _FROM_DEFAULTS) -> dict:
    """Call one RPC method on ``host:port`` and return its reply; raises RingkvError.
    ``secret``: the cluster secret to authenticate with (default :func:`default_secret`);
    ``ssl``: the TLS client context (default :func:`default_tls`)."""
    from ringkv.net.transport import RpcClient

    host, port = split_address(address)
    if secret is _FROM_DEFAULTS:
        secret = default_secret()
    if ssl is _FROM_DEFAULTS:
        ssl = default_tls()

    async def call() -> dict:
        async with RpcClient(connect_timeout=timeout, secret=secret, ssl=ssl) as client:
            return await client.call(host, port, method, body or {}, timeout=timeout)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(call())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return None
    return uvloop.new_event_loop


def split_address(address: str, default_port: int = DEFAULT_BASE_PORT) -> tuple[str, int]:
    """``"host:port"`` -> (host, port); a bare host gets ``default_port``."""
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default_port
    if not port.isdigit():
        raise LocalClusterError(f"bad address {address!r}: expected host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


class LocalCluster:
    """The nodes recorded in one cluster directory, and the processes behind them."""

    def __init__(self, root: str | Path, nodes: list[LocalNode] | None = None, rf: int = 3,
                 server_command: list[str] | None = None, secret_file: str = "",
                 tls_files: dict[str, str] | None = None) -> None:
        self.root = Path(root).resolve()
        self.nodes = nodes or []
        self.rf = rf
        self.secret_file = secret_file  # the cluster secret's file (D32), "" = none
        self.tls_files = dict(tls_files or {})  # cert_file, key_file, ca_file (D33); {} = no TLS
        # how a node is started; "--config <file>" is appended (tests may substitute a stand-in)
        self.server_command = server_command or [sys.executable, "-m", "ringkv.cli", "server"]
        self._procs: dict[str, subprocess.Popen] = {}  # nodes this manager started
        self._log_start: dict[str, int] = {}  # where each started node's log output begins

    # ------------------------------------------------------------ state file

    @classmethod
    def load(cls, root: str | Path) -> "LocalCluster | None":
        """The cluster recorded in ``root``, or None when there is none."""
        path = Path(root) / STATE_FILE
        try:
            data = json.loads(path.read_text())
            nodes = [LocalNode(**n) for n in data["nodes"]]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise LocalClusterError(f"{path} is not a ringkv cluster state file: {exc}") from None
        return cls(root, nodes, rf=int(data.get("rf", 3)),
                   secret_file=str(data.get("secret_file", "")),
                   tls_files={str(k): str(v) for k, v in (data.get("tls") or {}).items()})

    def save(self) -> None:
        """Write cluster.json atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {"version": 1, "rf": self.rf, "nodes": [asdict(n) for n in self.nodes]}
        if self.secret_file:
            data["secret_file"] = self.secret_file
        if self.tls_files:
            data["tls"] = self.tls_files
        tmp = self.root / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.root / STATE_FILE)

    def secret(self) -> bytes | None:
        """The cluster secret this cluster's nodes require, or None."""
        if not self.secret_file:
            return None
        return auth.read_secret_file(self.secret_file, f"{STATE_FILE} secret_file")

    def tls_context(self) -> Any:
        """The TLS client context for this cluster's nodes (their CA, their certificate
        presented), or None when they do not serve TLS."""
        if not self.tls_files:
            return None
        from ringkv.net import tls

        f = self.tls_files
        return tls.client_context(f["ca_file"], f["cert_file"], f["key_file"], field=STATE_FILE)

    def node_dir(self, node: LocalNode) -> Path:
        return self.root / node.node_id

    def config_path(self, node: LocalNode) -> Path:
        return self.node_dir(node) / "node.toml"

    def log_path(self, node: LocalNode) -> Path:
        return self.node_dir(node) / "node.log"

    # ------------------------------------------------------------ layout

    def plan(self, count: int, base_port: int, rf: int, host: str = "127.0.0.1") -> None:
        """Lay out ``count`` nodes, keeping the ones already recorded (grow only)."""
        if count < 1:
            raise LocalClusterError("a cluster needs at least 1 node")
        if count < len(self.nodes):
            raise LocalClusterError(
                f"the cluster in {self.root} has {len(self.nodes)} nodes; it cannot shrink to "
                f"{count} (run 'ringkv cluster down --dir {self.root}' and remove the directory)")
        first = self.nodes[0].port if self.nodes else base_port
        if not 0 < first or first + count - 1 + HTTP_PORT_OFFSET > 65535:
            raise LocalClusterError(f"ports {first}..{first + count - 1} (and 1000 above them for "
                                    "HTTP) must lie in 1..65535: choose another --base-port")
        if not self.nodes:
            self.rf = max(1, min(rf, count))
        growing = bool(self.nodes)  # nodes added to a cluster that has data must join
        for i in range(len(self.nodes), count):
            port = first + i
            self.nodes.append(LocalNode(f"n{i + 1}", host, port, port + HTTP_PORT_OFFSET))
        for node in self.nodes:
            self._write_config(node, join=growing)

    def seeds_for(self, node: LocalNode) -> list[str]:
        """The first three nodes are the seeds; a node never lists itself."""
        return [n.address for n in self.nodes[:3] if n.node_id != node.node_id]

    def _write_config(self, node: LocalNode, join: bool = False) -> None:
        path = self.config_path(node)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "node": {"node_id": node.node_id, "host": node.host, "port": node.port,
                     "http_port": node.http_port, "data_dir": str(self.node_dir(node) / "data"),
                     "seeds": self.seeds_for(node)},
            "cluster": {"replication": {"dc1": self.rf}},
        }  # everything else at the server's defaults (D27): a local cluster is not a toy
        if join:  # streams its ranges before serving reads (docs/topology.md)
            config["streaming"] = {"join": True}
        security: dict[str, str] = {f"tls_{k}": v for k, v in self.tls_files.items()}
        if self.secret_file:
            security["secret_file"] = self.secret_file
        if security:
            config["security"] = security
        path.write_text("# written by 'ringkv cluster up'; kept across restarts\n"
                        + tomli_w.dumps(config))

    # ------------------------------------------------------------ processes

    def is_running(self, node: LocalNode) -> bool:
        """True while node's recorded pid is alive and is this node's server process."""
        proc = self._procs.get(node.node_id)
        if proc is not None:
            proc.poll()  # reap our own child as soon as it exits
        if node.pid is None:
            return False
        return pid_matches(node.pid, str(self.config_path(node)))

    def start(self, node: LocalNode) -> int:
        """Start one node; returns the log offset its output starts at."""
        for port, what in ((node.port, "rpc"), (node.http_port, "http")):
            if not port_free(node.host, port):
                raise LocalClusterError(
                    f"cannot start {node.node_id}: {what} port {node.host}:{port} is in use by "
                    f"another process (choose another --base-port or stop that process)")
        log_path = self.log_path(node)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = log_path.stat().st_size if log_path.exists() else 0
        cmd = [*self.server_command, "--config", str(self.config_path(node))]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(log_path, "ab") as log:
            log.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self.root, env=env, start_new_session=True)
        self._procs[node.node_id] = proc
        self._log_start[node.node_id] = offset
        node.pid = proc.pid
        return offset

    def up(self, timeout: float = 60.0, say: Say = print) -> None:
        """Start every node that is not running and wait until the cluster serves."""
        offsets: dict[str, int] = {}
        try:
            for node in self.nodes:
                if self.is_running(node):
                    say(f"{node.node_id} already running (pid {node.pid})")
                    continue
                offsets[node.node_id] = self.start(node)
                self.save()
                say(f"started {node.node_id} (pid {node.pid}) on {node.address}, log {self.log_path(node)}")
            self.wait_ready(offsets, timeout)
        except BaseException:
            if offsets:
                say("start failed; stopping the nodes this run started")
                self.stop([n for n in self.nodes if n.node_id in offsets], say=say)
            raise

    def wait_ready(self, offsets: dict[str, int], timeout: float) -> None:
        """Wait for each started node's ready line, then for every ring to list every node."""
        deadline = time.monotonic() + timeout
        waiting = dict(offsets)
        while waiting:
            for node in [n for n in self.nodes if n.node_id in waiting]:
                self._check_alive(node)
                if READY_RE.search(self._log_since(node, waiting[node.node_id])):
                    del waiting[node.node_id]
            if waiting and time.monotonic() > deadline:
                node = next(n for n in self.nodes if n.node_id in waiting)
                raise LocalClusterError(
                    f"{node.node_id} did not report serving within {timeout:g}s; "
                    f"see {self.log_path(node)}{self._tail(node)}")
            if waiting:
                time.sleep(0.1)
        self.wait_converged(deadline, timeout)

    def wait_converged(self, deadline: float, timeout: float) -> None:
        """Poll every node's ``ring`` RPC until each lists every cluster node as up."""
        pending = list(self.nodes)
        last: dict[str, str] = {}
        secret, tls = self.secret(), self.tls_context()
        while pending:
            node = pending[0]
            self._check_alive(node)
            try:
                ring = rpc_call(node.address, "ring", timeout=2.0, secret=secret, ssl=tls)
                up = sum(1 for n in ring.get("nodes", []) if is_up(n.get("state")))
                last[node.node_id] = f"its ring shows {up} of {len(self.nodes)} nodes up"
                if up >= len(self.nodes):
                    pending.pop(0)
                    continue
            except RingkvError as exc:
                last[node.node_id] = f"ring RPC failed: {exc}"
            if time.monotonic() > deadline:
                raise LocalClusterError(
                    f"{node.node_id} is serving but the cluster did not form within {timeout:g}s "
                    f"({last[node.node_id]}); see {self.log_path(node)}")
            time.sleep(0.2)

    def _check_alive(self, node: LocalNode) -> None:
        proc = self._procs.get(node.node_id)
        if proc is not None and proc.poll() is not None:
            raise LocalClusterError(
                f"{node.node_id} exited with code {proc.returncode} while starting; "
                f"see {self.log_path(node)}{self._tail(node)}")
        if proc is None and not self.is_running(node):
            raise LocalClusterError(f"{node.node_id} is not running; see {self.log_path(node)}")

    def _log_since(self, node: LocalNode, offset: int) -> bytes:
        try:
            with open(self.log_path(node), "rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return b""

    def _tail(self, node: LocalNode, lines: int = 8) -> str:
        since = self._log_since(node, self._log_start.get(node.node_id, 0))
        text = since.decode(errors="replace").rstrip().splitlines()[-lines:]
        return "".join(f"\n  | {line}" for line in text)

    def exited(self) -> list[tuple[LocalNode, int]]:
        """Nodes this manager started whose process has exited, with their exit codes."""
        out = []
        for node in self.nodes:
            proc = self._procs.get(node.node_id)
            if proc is not None and proc.poll() is not None:
                out.append((node, proc.returncode))
        return out

    def forget_exited(self, node: LocalNode) -> None:
        """Drop an exited node's pid, in cluster.json too unless another manager (a later
        ``up`` in another terminal) has recorded a new pid for it since."""
        self._procs.pop(node.node_id, None)
        old, node.pid = node.pid, None
        on_disk = LocalCluster.load(self.root)
        if on_disk is None:
            return
        for other in on_disk.nodes:
            if other.node_id == node.node_id and other.pid == old:
                other.pid = None
        on_disk.save()

    def stop(self, nodes: list[LocalNode] | None = None, grace: float = 10.0, say: Say = print) -> None:
        """SIGTERM each running node, SIGKILL what is left after ``grace`` s; say what happened."""
        nodes = self.nodes if nodes is None else nodes
        running = [n for n in nodes if self.is_running(n)]
        exited = [n for n in nodes if n not in running and n.pid is not None]
        for node in exited:
            say(f"{node.node_id} had already exited (pid {node.pid})")
            node.pid = None
        if not running and not exited:
            say(f"no node of the cluster in {self.root} was running")
        for node in running:
            _signal(node.pid, signal.SIGTERM)
        killed = self._wait_gone(running, grace)
        for node in killed:
            _signal(node.pid, signal.SIGKILL)
        self._wait_gone(killed, 5.0)
        for node in running:
            how = f"killed after {grace:g}s grace" if node in killed else "stopped"
            say(f"{how} {node.node_id} (pid {node.pid})")
            node.pid = None
        self.save()

    def _wait_gone(self, nodes: list[LocalNode], seconds: float) -> list[LocalNode]:
        deadline = time.monotonic() + seconds
        alive = list(nodes)
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [n for n in alive if self.is_running(n)]
        return alive


def is_up(state: Any) -> bool:
    """Whether a node state string from the ``ring``/``status`` RPC means the node is up."""
    return str(state or "").lower() in ("up", "alive", "normal", "joining", "leaving", "moving")


def pid_matches(pid: int, marker: str) -> bool:
    """True if ``pid`` is a live (not zombie) process whose command line contains ``marker``."""
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        if sys.platform.startswith("linux"):
            return False
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    try:
        stat = (proc / "stat").read_text()
        if stat[stat.rindex(")") + 2:].startswith(("Z", "X")):
            return False
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return False
    return marker in cmdline


def port_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port (we can bind it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _signal(pid: int | None, sig: int) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def cluster_dir(explicit: str | None = None) -> Path:
    """The cluster directory: ``explicit``, else $RINGKV_CLUSTER_DIR, else .ringkv-cluster."""
    return Path(explicit or os.environ.get("RINGKV_CLUSTER_DIR") or DEFAULT_DIR)


def default_address(explicit_dir: str | None = None) -> str:
    """Where client commands go by default: the local cluster's first running node
    (its first node if none runs), else 127.0.0.1:7400."""
    cluster = _local_cluster(explicit_dir)
    if cluster is None or not cluster.nodes:
        return f"127.0.0.1:{DEFAULT_BASE_PORT}"
    running = [n for n in cluster.nodes if cluster.is_running(n)]
    return (running or cluster.nodes)[0].address


def _local_cluster(explicit_dir: str | None) -> "LocalCluster | None":
    try:
        return LocalCluster.load(cluster_dir(explicit_dir))
    except LocalClusterError:
        return None


def default_secret(explicit_dir: str | None = None) -> bytes | None:
    """The cluster secret client commands authenticate with: the one in the file
    ``$RINGKV_SECRET_FILE`` names, else the local cluster's (if it has one), else None."""
    secret = auth.secret_from_env()
    if secret is None and (cluster := _local_cluster(explicit_dir)) is not None:
        secret = cluster.secret()
    return secret


def default_tls(explicit_dir: str | None = None) -> Any:
    """The TLS client context client commands connect with: from ``$RINGKV_TLS_CA_FILE``
    (ringkv.net.tls), else the local cluster's (if it serves TLS), else None."""
    from ringkv.net import tls

    ctx = tls.context_from_env()
    if ctx is None and (cluster := _local_cluster(explicit_dir)) is not None:
        ctx = cluster.tls_context()
    return ctx


__all__ = ["LocalCluster", "LocalNode", "LocalClusterError", "rpc_call", "split_address",
           "cluster_dir", "default_address", "default_secret", "default_tls", "is_up",
           "pid_matches", "port_free"]
