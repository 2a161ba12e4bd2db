"""A cluster with a cluster secret (D32), as an operator runs one: real node processes on
loopback started by `ringkv cluster up --secret-file`, the CLI and the Python client with
the right secret, with a wrong one and with none, and a node started with another secret
that must not get into the cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ringkv.client import Client
from ringkv.errors import AuthenticationFailed
from ringkv.localcluster import rpc_call
from tests.integration.test_cli import check, cluster_running, free_base_port, run

NODES = 3
SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("auth")
    secret_file = root / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    secret_file.chmod(0o600)
    directory = root / "D"
    env = dict(os.environ, RINGKV_CLUSTER_DIR=str(directory))
    env.pop("RINGKV_SECRET_FILE", None)
    base = free_base_port(NODES + 1)
    with cluster_running(directory, env, "--nodes", NODES, "--base-port", base,
                         "--secret-file", secret_file):
        yield directory, env, base, root


def test_nodes_carry_the_secret_setting_and_the_cli_uses_it(secured):
    directory, env, base, root = secured
    assert f'secret_file = "{root / "secret"}"' in (directory / "n1" / "node.toml").read_text()
    check(run("put", "k", "v", env=env), directory)  # the local cluster's secret, by default
    assert check(run("get", "k", env=env), directory).stdout == "v\n"
    status = check(run("status", env=env), directory)
    assert sum(1 for line in status.stdout.splitlines() if line.startswith("UN ")) == NODES
    assert f"Security: cluster secret on; TLS off (all {NODES} nodes)" in status.stdout


def test_wrong_secret_is_refused_with_a_clear_error(secured):
    directory, env, base, root = secured
    wrong = root / "wrong"
    wrong.write_bytes(b"not-the-cluster-secret-at-all")
    bad_env = dict(env, RINGKV_SECRET_FILE=str(wrong))
    result = run("get", "k", env=bad_env)
    assert result.returncode == 3 and "AuthenticationFailed" in result.stderr, result
    assert "wrong cluster secret" in result.stderr
    short = root / "short"
    short.write_bytes(b"short")
    result = run("get", "k", env=dict(env, RINGKV_SECRET_FILE=str(short)))
    assert result.returncode == 2 and "at least 16" in result.stderr, result


def test_python_client_needs_the_secret(secured):
    directory, env, base, root = secured
    with Client([f"127.0.0.1:{base}"], secret=SECRET) as client:
        client.put(b"py", b"1", w="ALL")
        assert client.get(b"py", r="ALL")[0] == [b"1"]
    client = Client([f"127.0.0.1:{base}"], retries=0)
    try:
        with pytest.raises(AuthenticationFailed):
            client.get(b"py")
    finally:
        client.close()
    with pytest.raises(AuthenticationFailed):  # the RPC helper the tools use, no secret
        rpc_call(f"127.0.0.1:{base}", "ring", secret=None)


def test_a_node_with_another_secret_does_not_get_in(secured, tmp_path):
    """Internode traffic is authenticated: a node started with a different secret and the
    cluster's seeds stays outside; every node's ring keeps listing three nodes."""
    directory, env, base, root = secured
    other = tmp_path / "other-secret"
    other.write_bytes(b"a-different-secret-of-enough-length")
    port = base + NODES
    log_path = tmp_path / "outsider.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ringkv.cli", "server", "--node-id", "outsider",
             "--port", str(port), "--http-port", str(port + 1000), "--data-dir",
             str(tmp_path / "data"), "--seeds", f"127.0.0.1:{base}",
             "--secret-file", str(other)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while b"serving on" not in log_path.read_bytes():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        time.sleep(3.0)  # three gossip rounds (1 s each) in which it would have been let in
        for i in range(NODES):
            ring = rpc_call(f"127.0.0.1:{base + i}", "ring", secret=SECRET)
            assert sorted(n["node_id"] for n in ring["nodes"]) == ["n1", "n2", "n3"]
        assert b"AuthenticationFailed" in log_path.read_bytes()  # its gossip was refused
        logs = "".join((directory / f"n{i + 1}" / "node.log").read_text() for i in range(NODES))
        assert logs.count("refused rpc connection from 127.0.0.1") == 1  # once a minute per host
        status = rpc_call(f"127.0.0.1:{base}", "status", secret=SECRET)
        assert status["authenticated"] and status["counters"]["auth_refusals"] >= 2
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_http_and_resp_ports_need_the_secret_too(secured):
    """D41: the secret covers every port, not only RPC."""
    import urllib.error
    import urllib.request

    import redis

    directory, env, base, root = secured
    url = f"http://127.0.0.1:{base + 1000}"
    bearer = {"Authorization": "Bearer " + SECRET.decode()}
    for headers in ({}, {"Authorization": "Bearer not-the-secret"}):
        req = urllib.request.Request(f"{url}/kv/http-k", data=b"x", method="PUT", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=5)
        assert refused.value.code == 401
        assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")
        assert b"AuthenticationFailed" in refused.value.read()
    req = urllib.request.Request(f"{url}/kv/http-k", data=b"x", method="PUT", headers=bearer)
    assert urllib.request.urlopen(req, timeout=5).status == 200
    req = urllib.request.Request(f"{url}/status", headers=bearer)
    assert urllib.request.urlopen(req, timeout=5).status == 200

    resp_port = base + 2000
    anonymous = redis.Redis(port=resp_port, socket_timeout=5)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.get("http-k")
    finally:
        anonymous.close()
    wrong = redis.Redis(port=resp_port, password="not-the-secret", socket_timeout=5)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            wrong.get("http-k")
    finally:
        wrong.close()
    with redis.Redis(port=resp_port, password=SECRET.decode(), socket_timeout=5) as good:
        assert good.get("http-k") == b"x"
        assert good.set("resp-k", "y") is True
    assert check(run("get", "resp-k", env=env), directory).stdout == "y\n"
