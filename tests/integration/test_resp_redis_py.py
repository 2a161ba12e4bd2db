"""redis-py against real ringkv node processes (ringkv.testing.cluster), through their RESP ports."""

from __future__ import annotations

import subprocess
import time

import pytest
import redis
from redis.exceptions import ResponseError

from ringkv.testing import cluster as tc
from tests.conftest import require_tool


def resp_port_of(node: tc.NodeHandle) -> int:
    """The node's RESP port: from its status, else from its config file."""
    status = node.http_json("/status")
    for key in ("resp_port", "resp"):
        if isinstance(status.get(key), int) and status[key] > 0:
            return status[key]
    import tomllib

    cfg = tomllib.loads(node.config_path.read_text())
    port = cfg.get("node", {}).get("resp_port", 0)
    if port > 0:
        return port
    raise AssertionError(f"cannot find the RESP port of {node.node_id}: status {status}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = tc.start(3, tmp_path_factory.mktemp("resp"), replication={"dc1": 3},
                 config={"cluster": {"request_timeout_ms": 1000}})
    yield c
    c.close()


@pytest.fixture(scope="module")
def clients(cluster):
    out = [redis.Redis(port=resp_port_of(n), socket_timeout=10) for n in cluster.nodes]
    yield out
    for r in out:
        r.close()


def test_basic_commands_across_nodes(clients):
    r1, r2, r3 = clients
    assert r1.ping() is True
    assert r1.set("greeting", "hello") is True
    assert r2.get("greeting") == b"hello"  # QUORUM write then QUORUM read through another node
    assert r3.mset({"a": "1", "b": "2"}) is True
    assert r1.mget("a", "b", "nope") == [b"1", b"2", None]
    assert r2.exists("a", "b", "nope") == 2
    assert r3.delete("a", "nope") == 1
    assert r1.get("a") is None


def test_set_overwrites(clients):
    r1, r2, _ = clients
    for i in range(5):
        (r1 if i % 2 else r2).set("counter", i)
    assert r1.get("counter") == b"4"


def test_siblings(clients):
    r1, r2, _ = clients
    stale, = r1.execute_command("RINGKV.GETALL", "cart")
    r1.execute_command("RINGKV.PUT", "cart", "apple", stale)
    r2.execute_command("RINGKV.PUT", "cart", "pear", stale)
    with pytest.raises(ResponseError, match=r"^SIBLINGS 2 siblings"):
        r1.get("cart")
    ctx, *values = r2.execute_command("RINGKV.GETALL", "cart")
    assert sorted(values) == [b"apple", b"pear"]
    r1.execute_command("RINGKV.PUT", "cart", "apple,pear", ctx)
    assert r2.get("cart") == b"apple,pear"


def test_pipeline_and_errors(clients):
    r1 = clients[0]
    pipe = r1.pipeline(transaction=False)
    for i in range(50):
        pipe.set(f"p{i}", i)
        pipe.get(f"p{i}")
    out = pipe.execute()
    assert out[1::2] == [str(i).encode() for i in range(50)]
    with pytest.raises(ResponseError, match="unknown command"):
        r1.execute_command("NOSUCHCOMMAND")
    assert r1.ping() is True
    info = r1.info()
    assert info["redis_version"]


def test_unavailable_when_replicas_are_down(cluster, clients):
    r1 = clients[0]
    cluster.kill(1)
    cluster.kill(2)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r1.set("k-unavailable", "v")
            except ResponseError as exc:
                assert str(exc).startswith(("UNAVAILABLE", "TIMEOUT"))
                break
            assert time.monotonic() < deadline, "writes kept succeeding with 2 of 3 replicas down"
            time.sleep(0.5)
        assert r1.ping() is True  # the connection survived the error
    finally:
        cluster.restart(1)
        cluster.restart(2)


def test_redis_cli_and_redis_benchmark_work_unchanged(cluster):
    require_tool("redis-cli", "redis-tools")
    require_tool("redis-benchmark", "redis-tools")
    port = str(resp_port_of(cluster.nodes[0]))
    cli = subprocess.run(["redis-cli", "-p", port, "set", "from-cli", "yes"], capture_output=True,
                         text=True, timeout=30)
    assert cli.stdout.strip() == "OK"
    cli = subprocess.run(["redis-cli", "-p", port, "get", "from-cli"], capture_output=True, text=True,
                         timeout=30)
    assert cli.stdout.strip() == "yes"
    bench = subprocess.run(["redis-benchmark", "-p", port, "-t", "set,get", "-n", "2000", "-c", "10",
                            "-P", "4", "-r", "10000", "--csv"], capture_output=True, text=True,
                           timeout=120)
    assert bench.returncode == 0, bench.stderr
    tests = {line.split(",")[0].strip('"') for line in bench.stdout.splitlines()[1:]}
    assert {"SET", "GET"} <= tests, bench.stdout
