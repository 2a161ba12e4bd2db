"""Hostile client input: oversized keys/values, malformed frames. The node stays up."""

from __future__ import annotations

import socket
import struct

import msgpack
import pytest

from ringkv.errors import InvalidRequest, TooLarge

from .conftest import call, expect_error

MAX_VALUE = 256 * 1024  # the cluster fixture's limits.max_value_bytes
MAX_FRAME = 1024 * 1024


async def test_oversized_key_and_value_are_too_large(cluster, rpc):
    node = cluster.nodes[0]
    err = await expect_error(call(rpc, node, "put", {"key": b"k" * 1025, "value": b"v"}), TooLarge)
    assert (err.what, err.size, err.limit) == ("key", 1025, 1024)
    err = await expect_error(
        call(rpc, node, "put", {"key": b"big", "value": b"v" * (MAX_VALUE + 1)}), TooLarge)
    assert (err.what, err.limit) == ("value", MAX_VALUE)
    await expect_error(call(rpc, node, "get", {"key": b"k" * 5000}), TooLarge)
    assert await call(rpc, node, "ping", {}) == {}
    assert (await call(rpc, node, "get", {"key": b"big"}))["values"] == []


@pytest.mark.parametrize("body", [
    {}, {"key": None}, {"key": 12, "value": b"v"}, {"key": b"k", "value": 3},
    {"key": b"k", "value": b"v", "context": b"\xff\x00garbage"},
    {"key": b"k", "value": b"v", "context": 17}, {"key": b"k", "value": b"v", "ttl": "soon"},
])
async def test_malformed_requests_are_invalid(cluster, rpc, body):
    node = cluster.nodes[1]
    await expect_error(call(rpc, node, "put", body), InvalidRequest)
    assert await call(rpc, node, "ping", {}) == {}


@pytest.mark.parametrize("method,body", [
    ("replica_put", {"skey": b"short", "vs": b""}),
    ("replica_put", {"skey": b"12345678key", "vs": b"not a version set"}),
    ("replica_get", {"skey": 5}),
    ("gossip", {"kind": "gossip", "body": {"from": "nobody"}}),
    ("no_such_method", {}),
])
async def test_malformed_internode_requests_are_refused(cluster, rpc, method, body):
    node = cluster.nodes[2]
    await expect_error(call(rpc, node, method, body), InvalidRequest)
    assert await call(rpc, node, "ping", {}) == {}


def _raw_exchange(node, payload: bytes) -> bytes:
    """Send raw bytes, read until the node closes the connection (or 5 s)."""
    with socket.create_connection((node.host, node.port), timeout=5) as s:
        s.sendall(payload)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except socket.timeout:
            pytest.fail("the node kept a connection with a malformed frame open")
        return b"".join(chunks)


@pytest.mark.parametrize("payload", [
    struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1",  # not msgpack
    struct.pack(">I", 3) + msgpack.packb([0, 1, "x", {}]),  # length cuts the message short
    struct.pack(">I", 3) + msgpack.packb("hi"),  # not a 4-element array
    struct.pack(">I", MAX_FRAME + 1) + b"x" * 64,  # announced frame over the limit
])
async def test_malformed_frames_close_the_connection_and_the_node_stays_up(cluster, rpc, payload):
    node = cluster.nodes[3]
    _raw_exchange(node, payload)
    assert await call(rpc, node, "ping", {}) == {}
    reply = await call(rpc, node, "get", {"key": b"after-garbage", "r": "ONE"})
    assert reply["values"] == []
