"""The CLI as a newcomer uses it: real `ringkv` script, real node processes on loopback.

`ringkv cluster up --nodes 3 --dir D` returns once the cluster serves; `ringkv put k v`
then `ringkv get k` prints `v`; `ringkv status` shows 3 nodes up; `ringkv cluster down`
stops every process it started (their pids are gone). Around that flow: siblings and their
context, restart with data, and failures that print one line and exit nonzero.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from ringkv.cli import server_config
from ringkv.localcluster import LocalCluster, LocalClusterError, pid_matches

RINGKV = str(Path(sys.executable).parent / "ringkv")
NODES = 3


def run(*args: object, env: dict | None = None, timeout: float = 120,
        stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([RINGKV, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, input=stdin)


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(count: int) -> int:
    """A base port whose node ports (base..) and HTTP ports (base+1000..) are all free."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 31000)  # below the kernel's ephemeral range (32768-)
        if all(bindable(base + i) and bindable(base + 1000 + i) for i in range(count)):
            return base
    raise RuntimeError("no free port range found")


def node_pids(directory: Path) -> dict[str, int]:
    state = json.loads((directory / "cluster.json").read_text())
    return {n["node_id"]: n["pid"] for n in state["nodes"] if n["pid"]}


def alive(pid: int, directory: Path, node_id: str) -> bool:
    return pid_matches(pid, str(directory / node_id / "node.toml"))


def logs(directory: Path) -> str:
    out = []
    for log in sorted(directory.glob("*/node.log")):
        out.append(f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(out)


def check(result: subprocess.CompletedProcess, directory: Path) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}\nstdout:\n{result.stdout}\n"
        f"stderr:\n{result.stderr}\n{logs(directory)}")
    return result


@contextlib.contextmanager
def cluster_running(directory: Path, env: dict, *up_args: object) -> Iterator[None]:
    """``ringkv cluster up --dir directory UP_ARGS``, then always ``cluster down`` (and
    SIGKILL for any node left), even when a test fails."""
    started: dict[str, int] = {}
    try:
        up = run("cluster", "up", "--dir", directory, *up_args, env=env)
        if (directory / "cluster.json").exists():
            started = node_pids(directory)
        check(up, directory)
        yield
    finally:
        run("cluster", "down", "--dir", directory, "--grace", 5, env=env)
        for node_id, pid in started.items():  # belt and braces: nothing may outlive the test
            if alive(pid, directory, node_id):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A 3-node cluster started with the CLI; always torn down, even when a test fails."""
    directory = tmp_path_factory.mktemp("cli") / "D"
    env = dict(os.environ, RINGKV_CLUSTER_DIR=str(directory))
    with cluster_running(directory, env, "--nodes", NODES, "--base-port", free_base_port(NODES)):
        yield directory, env


def test_up_returns_once_every_node_serves(cli_cluster):
    directory, env = cli_cluster
    pids = node_pids(directory)
    assert sorted(pids) == ["n1", "n2", "n3"]
    assert all(alive(pid, directory, n) for n, pid in pids.items())
    for node_id in pids:
        assert "serving on" in (directory / node_id / "node.log").read_text()
    status = check(run("cluster", "status", "--dir", directory, env=env), directory)
    assert status.stdout.count("running") == NODES


def test_put_then_get_prints_the_value(cli_cluster):
    directory, env = cli_cluster
    check(run("put", "k", "v", env=env), directory)
    get = check(run("get", "k", env=env), directory)
    assert get.stdout == "v\n"


def test_status_shows_every_node_up(cli_cluster):
    directory, env = cli_cluster
    status = check(run("status", env=env), directory)
    rows = [line for line in status.stdout.splitlines() if line.startswith("UN ")]
    assert len(rows) == NODES, status.stdout
    assert "Datacenter: dc1" in status.stdout
    assert f"Security: cluster secret off; TLS off (all {NODES} nodes)" in status.stdout
    data = json.loads(check(run("status", "--json", env=env), directory).stdout)
    assert [n["code"] for n in data["nodes"]] == ["UN"] * NODES
    assert [(n["authenticated"], n["tls"]) for n in data["nodes"]] == [(False, False)] * NODES
    assert data["source"] == f"127.0.0.1:{json.loads((directory / 'cluster.json').read_text())['nodes'][0]['port']}"
    assert sum(n["owns"] for n in data["nodes"]) == pytest.approx(3.0)  # rf 3 over 3 nodes


def test_ring_lists_ranges_and_owners(cli_cluster):
    directory, env = cli_cluster
    ring = check(run("ring", env=env), directory)
    assert "Owns (effective)" in ring.stdout and "more ranges" in ring.stdout
    data = json.loads(check(run("ring", "--json", env=env), directory).stdout)
    assert len(data["nodes"]) == NODES
    assert all(len(r["replicas"]) == NODES for r in data["ranges"])


def test_siblings_are_shown_with_a_context_that_resolves_them(cli_cluster):
    directory, env = cli_cluster
    check(run("put", "s", "base", env=env), directory)
    first = check(run("get", "s", "--show-context", env=env), directory).stdout.splitlines()
    assert first[0] == "base" and first[1].startswith("context: ")
    stale = first[1].removeprefix("context: ")
    check(run("put", "s", "left", "--context", stale, env=env), directory)
    check(run("put", "s", "right", "--context", stale, env=env), directory)
    siblings = check(run("get", "s", env=env), directory).stdout
    assert "2 siblings" in siblings and "left" in siblings and "right" in siblings
    context = next(line for line in siblings.splitlines() if line.startswith("context: "))
    check(run("put", "s", "merged", "--context", context.removeprefix("context: "), env=env), directory)
    assert check(run("get", "s", env=env), directory).stdout == "merged\n"


def test_delete_then_get_says_not_found(cli_cluster):
    directory, env = cli_cluster
    check(run("put", "gone", "soon", env=env), directory)
    check(run("delete", "gone", env=env), directory)
    get = run("get", "gone", env=env)
    assert get.returncode == 1 and "not found" in get.stderr and get.stdout == ""


def test_errors_are_one_line_and_nonzero(cli_cluster):
    directory, env = cli_cluster
    too_big = run("put", "big", "-", env=env, stdin="x" * (1024 * 1024 + 1))  # over the 1 MiB default
    assert too_big.returncode == 3, too_big.stderr
    assert "TooLarge" in too_big.stderr and "Traceback" not in too_big.stderr
    bad_level = run("get", "k", "--r", "SEVEN", env=env)
    assert bad_level.returncode == 3 and "Traceback" not in bad_level.stderr
    port = free_base_port(1)
    refused = run("get", "k", "--host", f"127.0.0.1:{port}", env=env)
    assert refused.returncode == 4
    assert refused.stderr.count("\n") == 1 and "cannot reach 127.0.0.1" in refused.stderr


def test_restart_keeps_data(cli_cluster):
    directory, env = cli_cluster
    check(run("put", "durable", "yes", "--w", "ALL", env=env), directory)
    check(run("cluster", "down", "--dir", directory, env=env), directory)
    up = check(run("cluster", "up", "--dir", directory, env=env), directory)
    assert up.stdout.count("started") == NODES
    assert check(run("get", "durable", "--r", "ALL", env=env), directory).stdout == "yes\n"


def test_down_stops_every_process(cli_cluster):
    directory, env = cli_cluster
    pids = node_pids(directory)
    assert len(pids) == NODES
    down = check(run("cluster", "down", "--dir", directory, env=env), directory)
    for node_id in pids:
        assert f"stopped {node_id}" in down.stdout
    deadline = time.monotonic() + 5
    while any(alive(p, directory, n) for n, p in pids.items()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p, directory, n) for n, p in pids.items())
    assert node_pids(directory) == {}
    refused = run("get", "k", env=env)
    assert refused.returncode == 4 and "Traceback" not in refused.stderr


def test_server_config_errors_exit_2(tmp_path):
    missing = run("server", "--config", tmp_path / "nope.toml")
    assert missing.returncode == 2 and "file not found" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\nport = 7400\ncolour = 'blue'\n")
    unknown = run("server", "--config", bad)
    assert unknown.returncode == 2 and "node.colour" in unknown.stderr
    invalid = run("server", "--port", "70000", "--data-dir", tmp_path / "d")
    assert invalid.returncode == 2 and "node.port" in invalid.stderr
    for result in (missing, unknown, invalid):
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_cluster_commands_without_a_cluster(tmp_path):
    down = run("cluster", "down", "--dir", tmp_path / "none")
    assert down.returncode != 0 and "no local cluster" in down.stderr
    assert "Traceback" not in down.stderr


def test_server_flags_override_the_config_file(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('[node]\nnode_id = "a"\nport = 9000\ndc = "east"\n[cluster]\nreplication = {east = 2}\n')
    config = server_config(str(path), {"port": 9100, "seeds": "h1:1, h2:2", "host": None}, "off")
    assert (config.node.node_id, config.node.port, config.node.dc) == ("a", 9100, "east")
    assert config.node.host == "127.0.0.1" and config.node.seeds == ("h1:1", "h2:2")
    assert config.storage.sync_mode == "off" and config.cluster.replication == {"east": 2}


def stand_in_cluster(tmp_path: Path, script: str) -> LocalCluster:
    """A 2-node local cluster whose "nodes" run ``script`` instead of the server."""
    local = LocalCluster(tmp_path / "D", server_command=[sys.executable, "-c", script])
    local.plan(2, free_base_port(2), rf=3)
    return local


def test_up_names_the_node_that_exits_and_its_log(tmp_path):
    local = stand_in_cluster(tmp_path, "import sys; print('boom: bad disk'); sys.exit(3)")
    with pytest.raises(LocalClusterError) as err:
        local.up(timeout=30, say=lambda m: None)
    message = str(err.value)
    assert "exited with code 3" in message and "boom: bad disk" in message
    assert str(tmp_path / "D" / "n1" / "node.log") in message or "n2/node.log" in message
    assert node_pids(tmp_path / "D") == {}


def test_up_times_out_and_stops_what_it_started(tmp_path):
    local = stand_in_cluster(tmp_path, "import time; print('warming up', flush=True); time.sleep(60)")
    started: list[str] = []
    with pytest.raises(LocalClusterError) as err:
        local.up(timeout=1.5, say=started.append)
    assert "did not report serving within 1.5s" in str(err.value) and "warming up" in str(err.value)
    pids = [int(line.split("pid ")[1].split(")")[0]) for line in started if line.startswith("started")]
    assert len(pids) == 2
    assert not any(pid_matches(pid, "node.toml") for pid in pids)
    assert node_pids(tmp_path / "D") == {}
