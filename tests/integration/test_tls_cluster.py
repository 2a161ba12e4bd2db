"""A cluster that serves TLS on every port (D33), as an operator runs one: real node
processes on loopback started by `ringkv cluster up --tls-*`, reached by the CLI, the
Python client, HTTPS and RESP over TLS, and refused to plaintext clients and to clients
that do not trust the cluster's CA."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
import trustme

from ringkv.client import Client
from ringkv.errors import AuthenticationFailed, RingkvError
from ringkv.localcluster import rpc_call
from ringkv.net import tls
from tests.integration.test_cli import check, cluster_running, free_base_port, run
from tests.unit.test_tls import Pki

NODES = 3


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tls")
    pki = Pki(root)
    files = {"ca": Path(pki.ca_file), "cert": Path(pki.cert_file), "key": Path(pki.key_file)}
    directory = root / "D"
    env = dict(os.environ, RINGKV_CLUSTER_DIR=str(directory))
    for name in (tls.CA_FILE_ENV, tls.CERT_FILE_ENV, tls.KEY_FILE_ENV, "RINGKV_SECRET_FILE"):
        env.pop(name, None)
    base = free_base_port(NODES)
    with cluster_running(directory, env, "--nodes", NODES, "--base-port", base,
                         "--tls-cert-file", files["cert"], "--tls-key-file", files["key"],
                         "--tls-ca-file", files["ca"]):
        yield directory, env, base, files


def test_cli_talks_tls_to_the_local_cluster(tls_cluster):
    directory, env, base, files = tls_cluster
    assert "with TLS" in (directory / "n1" / "node.log").read_text()
    check(run("put", "k", "v", env=env), directory)
    assert check(run("get", "k", env=env), directory).stdout == "v\n"
    status = check(run("status", env=env), directory)
    assert sum(1 for line in status.stdout.splitlines() if line.startswith("UN ")) == NODES
    assert f"Security: cluster secret off; TLS on (all {NODES} nodes)" in status.stdout


def test_python_client_over_tls_and_refusals(tls_cluster, tmp_path):
    directory, env, base, files = tls_cluster
    ctx = tls.client_context(str(files["ca"]))
    with Client([f"127.0.0.1:{base}"], ssl=ctx) as client:
        client.put(b"py", b"1", w="ALL")
        assert client.get(b"py", r="ALL")[0] == [b"1"]
    stranger = trustme.CA()  # a CA the cluster's certificates do not come from
    stranger.cert_pem.write_to_path(str(tmp_path / "stranger.pem"))
    with pytest.raises(AuthenticationFailed, match="not trusted"):
        rpc_call(f"127.0.0.1:{base}", "ring", ssl=tls.client_context(str(tmp_path / "stranger.pem")))
    with pytest.raises(RingkvError, match="serves TLS"):  # plaintext to a TLS port: no answer
        rpc_call(f"127.0.0.1:{base}", "ring", ssl=None, timeout=2.0)
    elsewhere = dict(env, RINGKV_CLUSTER_DIR=str(tmp_path / "none"))  # no local record: plaintext
    result = run("get", "py", "--host", f"127.0.0.1:{base}", env=elsewhere)
    assert result.returncode != 0 and "RINGKV_TLS_CA_FILE" in result.stderr, result
    result = run("get", "py", env=dict(env, RINGKV_TLS_CA_FILE=str(tmp_path / "stranger.pem")))
    assert result.returncode == 3 and "not trusted" in result.stderr, result


def test_http_and_resp_ports_serve_tls(tls_cluster):
    directory, env, base, files = tls_cluster
    ctx = ssl.create_default_context(cafile=str(files["ca"]))
    http_port = base + 1000
    with urllib.request.urlopen(f"https://127.0.0.1:{http_port}/status", context=ctx, timeout=10) as r:
        status = json.load(r)
    assert status["tls"] is True and status["node_id"] == "n1"
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP is not served
        urllib.request.urlopen(f"http://127.0.0.1:{http_port}/status", timeout=5).read()
    r = redis.Redis(host="127.0.0.1", port=base + 2000, ssl=True, ssl_ca_certs=str(files["ca"]),
                    socket_timeout=10)
    try:
        assert r.set("resp-key", "x") and r.get("resp-key") == b"x"
    finally:
        r.close()
