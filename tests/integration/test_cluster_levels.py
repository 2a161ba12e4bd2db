"""Every consistency level against 5 real nodes in two dcs (N = 3: 2 in dc1, 1 in dc2)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from ringkv.client import AsyncClient
from ringkv.errors import InvalidRequest, Unavailable

from .conftest import call, expect_error, replicas_of

LEVELS = ["ONE", "TWO", "THREE", "QUORUM", "ALL", 1, 2, 3, "LOCAL_ONE", "LOCAL_QUORUM",
          "EACH_QUORUM"]


@pytest.mark.parametrize("level", LEVELS)
async def test_put_then_get_at_every_level(cluster, level):
    async with AsyncClient(cluster.addresses()[:2]) as client:
        key = f"level-{level}".encode()
        ctx = await client.put(key, b"value-" + key, w=level)
        values, ctx2 = await client.get(key, r=level)
        assert values == [b"value-" + key]
        assert ctx2 == ctx


async def test_every_level_through_every_coordinator(cluster, rpc):
    """Any node coordinates: non-replicas forward writes and read from replicas."""
    for i, node in enumerate(cluster.nodes):
        key = f"coord-{i}".encode()
        await call(rpc, node, "put", {"key": key, "value": b"x%d" % i, "w": "ALL"})
        for other in cluster.nodes:
            reply = await call(rpc, other, "get", {"key": key, "r": "ALL"})
            assert reply["values"] == [b"x%d" % i]


async def test_local_levels_from_the_second_dc(cluster, rpc):
    dc2 = [n for n in cluster.nodes if n.dc == "dc2"]
    for level in ("LOCAL_ONE", "LOCAL_QUORUM"):
        key = f"local-dc2-{level}".encode()
        await call(rpc, dc2[0], "put", {"key": key, "value": b"v", "w": level})
        reply = await call(rpc, dc2[1], "get", {"key": key, "r": level})
        assert reply["values"] == [b"v"]


async def test_level_above_replication_is_unavailable(cluster, rpc):
    replica = replicas_of(cluster, b"too-many")[0]
    err = await expect_error(call(rpc, replica, "put", {"key": b"too-many", "value": b"v", "w": 4}),
                             Unavailable)
    assert (err.required, err.alive) == (4, 3)
    assert (await call(rpc, replica, "get", {"key": b"too-many", "r": 1}))["values"] == []


@pytest.mark.parametrize("level", ["SOMETIMES", 0, -3, 1.5, b"ONE", [1]])
async def test_invalid_level_is_refused(cluster, rpc, level):
    node = cluster.nodes[0]
    await expect_error(call(rpc, node, "put", {"key": b"bad-level", "value": b"v", "w": level}),
                       InvalidRequest)
    await expect_error(call(rpc, node, "get", {"key": b"bad-level", "r": level}), InvalidRequest)


def _http(node, method, path, data=None, headers=None):
    req = urllib.request.Request(f"http://{node.host}:{node.http_port}{path}", data=data,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_http_api(cluster):
    a, b = cluster.nodes[0], cluster.nodes[3]
    status, _, body = _http(a, "PUT", "/kv/http%20key?w=ALL", b"hello")
    assert status == 200
    ctx = json.loads(body)["context"]
    status, headers, body = _http(b, "GET", "/kv/http%20key?r=QUORUM")
    assert status == 200 and json.loads(body)["values"] == [base64.b64encode(b"hello").decode()]
    assert headers["X-Ringkv-Context"] == ctx
    status, _, raw = _http(b, "GET", "/kv/http%20key", headers={"Accept": "application/octet-stream"})
    assert (status, raw) == (200, b"hello")
    # two writers from the same context -> siblings -> 300 for a raw read
    _http(a, "PUT", "/kv/http%20key", b"one", {"X-Ringkv-Context": ctx})
    _http(b, "PUT", "/kv/http%20key", b"two", {"X-Ringkv-Context": ctx})
    status, _, body = _http(a, "GET", "/kv/http%20key?r=ALL",
                            headers={"Accept": "application/octet-stream"})
    assert status == 300 and json.loads(body)["siblings"] == 2
    status, headers, _ = _http(a, "GET", "/kv/http%20key?r=ALL")
    status, _, _ = _http(a, "DELETE", "/kv/http%20key?w=ALL",
                         headers={"X-Ringkv-Context": headers["X-Ringkv-Context"]})
    assert status == 200
    assert _http(b, "GET", "/kv/http%20key?r=ALL")[0] == 404
    assert _http(a, "GET", "/kv/x?r=NOPE")[0] == 400
    assert _http(a, "PUT", "/kv/big", b"x" * (256 * 1024 + 1))[0] == 413
    assert json.loads(_http(a, "GET", "/status")[2])["node_id"] == "n1"
    assert len(json.loads(_http(a, "GET", "/ring")[2])["nodes"]) == 5
    metrics = _http(a, "GET", "/metrics")[2].decode()
    assert "ringkv_operations_total" in metrics and "ringkv_load_bytes" in metrics
