"""A node holds at most ``limits.max_connections`` connections on each of its RPC, RESP and
HTTP ports: one more gets a typed error and is closed, the node keeps serving, and a slot
that frees up takes a new connection. Before the cap, nothing bounded the RPC port, so
enough idle connections used up the node's descriptors and then its flushes failed
(docs/decisions.md D37). Real node processes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Iterator

import pytest

from ringkv import testing
from ringkv.errors import Overloaded
from ringkv.localcluster import rpc_call
from ringkv.net.transport import RpcClient

LIMIT = 8


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with testing.cluster.start(1, tmp_path_factory.mktemp("connlimit"),
                               config={"limits": {"max_connections": LIMIT}}) as c:
        yield c


@contextlib.contextmanager
def _holding(host: str, port: int, count: int = LIMIT) -> Iterator[list[socket.socket]]:
    """``count`` open connections to ``port``, closed on the way out."""
    held = [socket.create_connection((host, port), timeout=5) for _ in range(count)]
    try:
        yield held
    finally:
        for s in held:
            s.close()


def _connections(node) -> int:
    return node.http_json("/status")["connections"]


def _wait(cond, what: str) -> None:
    testing.cluster.wait_until(cond, time.monotonic() + 10.0, what)


def _rejected(cluster) -> int:
    return cluster.nodes[0].http_json("/status")["counters"]["rejected_connections"]


def test_one_rpc_connection_too_many_gets_overloaded_and_the_node_serves_on(cluster):
    node = cluster.nodes[0]

    async def call() -> dict:
        async with RpcClient() as rpc:
            return await rpc.call(node.host, node.port, "put", {"key": b"k", "value": b"v"}, 5.0)

    _wait(lambda: _connections(node) == 0, "the readiness probes' connections closed")
    with _holding(node.host, node.port) as held:
        _wait(lambda: _connections(node) == LIMIT, "every held connection accepted")
        before = _rejected(cluster)
        with pytest.raises(Overloaded, match="too many connections.*limits.max_connections"):
            asyncio.run(call())
        assert _rejected(cluster) == before + 1
        held[-1].close()  # a slot frees up
        _wait(lambda: _connections(node) < LIMIT, "the closed connection released")
        assert "context" in asyncio.run(call())


def test_one_resp_connection_too_many_is_refused_like_redis(cluster):
    node = cluster.nodes[0]
    with _holding(node.host, node.resp_port) as held:
        for s in held:  # each of them is served
            s.sendall(b"PING\r\n")
            assert s.recv(64) == b"+PONG\r\n"
        extra = socket.create_connection((node.host, node.resp_port), timeout=5)
        with extra:
            assert extra.recv(128).startswith(b"-ERR max number of clients reached")
            assert extra.recv(128) == b""  # closed
        held[0].sendall(b"PING\r\n")
        assert held[0].recv(64) == b"+PONG\r\n"


def test_one_http_connection_too_many_gets_503_overloaded(cluster):
    node = cluster.nodes[0]
    with _holding(node.host, node.http_port) as held:
        for s in held:  # keep-alive connections, each served
            s.sendall(b"GET /ring HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.1 200")
        extra = socket.create_connection((node.host, node.http_port), timeout=5)
        with extra:
            reply = b""
            while chunk := extra.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 503") and b'"error": "Overloaded"' in reply
    _wait(lambda: _status_counter(node, "http_rejected_connections") >= 1,
          "the refusal counted")


def _status_counter(node, name: str) -> int:
    """Over RPC: the HTTP port may still count the connections just closed as open."""
    return rpc_call(node.address, "status", timeout=5.0)["counters"].get(name, 0)
