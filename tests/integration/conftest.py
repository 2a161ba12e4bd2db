"""Fixtures for integration tests: one 5-node cluster of real processes for the session.

Layout: n1..n3 in dc1, n4..n5 in dc2, replication {dc1: 2, dc2: 1} (N = 3), so every level
(ONE..ALL, numeric, LOCAL_*, EACH_QUORUM) has something to check. Tests that stop, kill
or pause nodes put the cluster back (``restore``) before they return, so they can share
it; each test uses keys of its own.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from ringkv.errors import RingkvError
from ringkv.net.transport import RpcClient
from ringkv.ring import NodeInfo, Ring, storage_key, token_for
from ringkv.testing import cluster as tc

DCS = ["dc1", "dc1", "dc1", "dc2", "dc2"]
REPLICATION = {"dc1": 2, "dc2": 1}
REQUEST_TIMEOUT_MS = 1500


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("cluster")
    c = tc.start(5, base, dcs=DCS, replication=REPLICATION, num_tokens=16,
                 config={"cluster": {"request_timeout_ms": REQUEST_TIMEOUT_MS},
                         "limits": {"max_value_bytes": 256 * 1024,
                                    "max_frame_bytes": 1024 * 1024},
                         # strict quorums, no hints: these tests check Unavailable and
                         # read repair; hinted handoff has its own cluster
                         # (test_hinted_handoff.py)
                         "hints": {"mode": "off"}},
                 timeout=90)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def restore(cluster: tc.Cluster):
    """After the test: every node running, unpaused, and seen alive by all."""
    yield cluster
    for node in cluster.nodes:
        if node.paused:
            cluster.resume(node.index)
        if not node.running:
            cluster.start_node(node.index)
    cluster.wait_ready(90)


@pytest.fixture
async def rpc():
    client = RpcClient(connect_timeout=2.0)
    try:
        yield client
    finally:
        await client.close()


def ring_of(cluster: tc.Cluster) -> Ring:
    """The ring as node n1 reports it."""
    reply = cluster.nodes[0].http_json("/ring")
    nodes = [NodeInfo(n["node_id"], tuple(n["tokens"]), n["dc"], n["rack"], n["host"], n["port"],
                      n["http_port"]) for n in reply["nodes"]]
    return Ring(nodes, reply["replication"])


def replicas_of(cluster: tc.Cluster, key: bytes) -> list[tc.NodeHandle]:
    return [cluster.node(n) for n in ring_of(cluster).replicas(token_for(key))]


def key_with(cluster: tc.Cluster, prefix: str, pred) -> bytes:
    """The first key ``prefix-i`` whose replica list satisfies ``pred``."""
    ring = ring_of(cluster)
    for i in range(10_000):
        key = f"{prefix}-{i}".encode()
        if pred(ring.replicas(token_for(key))):
            return key
    raise AssertionError("no key found")


async def call(rpc: RpcClient, node: tc.NodeHandle, method: str, body: dict,
               timeout: float = 5.0) -> dict:
    return await rpc.call(node.host, node.port, method, body, timeout)


async def stored(rpc: RpcClient, node: tc.NodeHandle, key: bytes) -> bytes | None:
    """The raw version set a replica holds for ``key`` (replica_get)."""
    reply = await call(rpc, node, "replica_get", {"skey": storage_key(key)})
    return reply.get("vs")


async def expect_error(coro, kind: type[RingkvError]) -> RingkvError:
    try:
        await coro
    except kind as exc:
        return exc
    raise AssertionError(f"expected {kind.__name__}")


async def poll(cond, timeout: float = 30.0, what: str = "condition") -> Any:
    """Await ``cond()`` (sync or async) until truthy, up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)
