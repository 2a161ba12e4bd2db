"""Hostile client input: oversized keys/values, malformed frames. The node stays up."""

from __future__ import annotations

import random
import socket
import struct

import msgpack
import pytest

from ringkv.errors import InvalidRequest, RingkvError, TooLarge

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


# Every RPC method a node serves, but the two that change membership when their body is
# valid (decommission, removenode), "repair", which starts a background job, and
# "snapshot", which flushes and writes a snapshot directory whenever a body has no name.
_FUZZED_METHODS = [
    "get", "put", "delete", "replica_get", "replica_put", "replica_put_batch", "hint_put",
    "gossip", "merkle_open", "merkle_level", "merkle_keys", "merkle_root", "merkle_close",
    "repair_get", "repair_put", "repair_status", "stream_range", "stream_apply", "streams",
    "ring", "status", "ping", "snapshots", "snapshot_clear",
]
_FIELDS = ("key value context w r ttl skey vs items target forwarded kind body from members "
           "sid start end depth level step nodes skeys root count id after limit_bytes want "
           "origin entry proof nonce full buckets node_id name").split()


def _random_value(rng: random.Random, depth: int = 0):
    """Any msgpack value a hostile or buggy peer could send, biased to the edge cases."""
    pick = rng.randrange(12 if depth < 2 else 9)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False, 0.5, float("nan"), float("inf")])
    if pick == 2:
        return rng.choice([0, 1, -1, 3, 2**63 - 1, -2**63, 2**64 - 1])
    if pick == 3:
        return rng.randrange(-1000, 1000)
    if pick == 4:
        return rng.choice(["", "x", "n1", "ALL", "QUORUM", "EACH_QUORUM", "dc1"])
    if pick in (5, 6):
        return rng.randbytes(rng.choice([0, 1, 8, 9, 16, 40]))
    if pick == 7:
        return b"\x00" * 8 + b"k"  # a well-formed storage key
    if pick == 8:
        return msgpack.packb([1, ["n1", 1], ["n1", 1, b"v", 1.0]])  # a well-formed version set
    if pick in (9, 10):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(_FIELDS): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


async def test_random_bodies_get_typed_errors_on_every_method(cluster, rpc):
    """A node answers any body on any method with a reply or a typed error, never with an
    "internal error" (a handler that met input it does not check), and stays up. Seeded, so
    a failure replays; the first cases are bodies that once raised TypeError (a list or a
    dict used as a session or job id)."""
    node = cluster.nodes[4]
    cases = [("merkle_level", {"sid": [b"x"], "level": 0, "step": 1, "nodes": b""}),
             ("repair_status", {"id": {"sid": b"x"}})]
    rng = random.Random(20261203)
    for _ in range(1200):
        body = {f: _random_value(rng) for f in rng.sample(_FIELDS, rng.randrange(7))}
        cases.append((rng.choice(_FUZZED_METHODS), body))
    internal = []
    for method, body in cases:
        try:
            await call(rpc, node, method, body)
        except RingkvError as exc:
            if type(exc) is RingkvError or str(exc).startswith("internal error"):
                internal.append((method, body, str(exc)))
    assert not internal, f"{len(internal)} internal errors, the first: {internal[0]}"
    assert await call(rpc, node, "ping", {}) == {}
