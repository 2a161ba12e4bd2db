"""Siblings from concurrent writers with stale contexts, their resolution, and deletes."""

from __future__ import annotations

import asyncio

from ringkv import versions
from ringkv.client import AsyncClient
from ringkv.errors import Overloaded

from .conftest import call, expect_error, replicas_of


async def test_stale_contexts_make_siblings_and_a_put_resolves_them(cluster):
    async with AsyncClient(cluster.addresses()) as client:
        key = b"siblings-1"
        await client.put(key, b"v0", w="ALL")
        _, ctx = await client.get(key, r="ALL")
        # two writers that both read ctx write concurrently
        await asyncio.gather(client.put(key, b"alice", context=ctx, w="ALL"),
                             client.put(key, b"bob", context=ctx, w="ALL"))
        values, ctx2 = await client.get(key, r="ALL")
        assert sorted(values) == [b"alice", b"bob"]
        # a writer with the newest context replaces both
        await client.put(key, b"merged", context=ctx2, w="ALL")
        values, _ = await client.get(key, r="ALL")
        assert values == [b"merged"]


async def test_writes_through_different_coordinators_stay_concurrent(cluster, rpc):
    """Stale-context writes coordinated by different replicas: every one survives."""
    key = b"siblings-2"
    replicas = replicas_of(cluster, key)
    await call(rpc, replicas[0], "put", {"key": key, "value": b"base", "w": "ALL"})
    ctx = (await call(rpc, replicas[0], "get", {"key": key, "r": "ALL"}))["context"]
    for i, node in enumerate(replicas):
        await call(rpc, node, "put", {"key": key, "value": b"w%d" % i, "context": ctx, "w": "ALL"})
    reply = await call(rpc, replicas[1], "get", {"key": key, "r": "ALL"})
    assert sorted(reply["values"]) == [b"w0", b"w1", b"w2"]
    vv = versions.decode_context(reply["context"])
    assert all(vv.get(n.node_id, 0) >= 1 for n in replicas)


async def test_retries_with_the_same_context_do_not_pile_up_siblings(cluster, rpc):
    key = b"siblings-3"
    node = replicas_of(cluster, key)[0]
    await call(rpc, node, "put", {"key": key, "value": b"a", "w": "ALL"})
    ctx = (await call(rpc, node, "get", {"key": key, "r": "ALL"}))["context"]
    for _ in range(5):
        ctx = (await call(rpc, node, "put", {"key": key, "value": b"b", "context": ctx}))["context"]
    reply = await call(rpc, node, "get", {"key": key, "r": "ALL"})
    assert reply["values"] == [b"b"]


async def test_delete_is_a_version(cluster, rpc):
    key = b"deleted-1"
    node = cluster.nodes[2]
    await call(rpc, node, "put", {"key": key, "value": b"here", "w": "ALL"})
    ctx = (await call(rpc, node, "get", {"key": key, "r": "ALL"}))["context"]
    await call(rpc, node, "delete", {"key": key, "context": ctx, "w": "ALL"})
    reply = await call(rpc, cluster.nodes[4], "get", {"key": key, "r": "ALL"})
    assert reply["values"] == []
    assert versions.decode_context(reply["context"])  # the tombstone's context survives
    # a concurrent write that had not seen the delete survives it
    await call(rpc, node, "put", {"key": key, "value": b"again", "context": ctx, "w": "ALL"})
    reply = await call(rpc, node, "get", {"key": key, "r": "ALL"})
    assert reply["values"] == [b"again"]


async def test_concurrent_read_modify_writes_lose_no_update(cluster):
    """30 writers each read the set, add their id and write back with the context, all at
    once through different coordinators: siblings keep every concurrent update, so the
    union of the final siblings holds every id (no lost update)."""
    key = b"rmw-set"

    def union(values):
        return set().union(*(set(v.split(b",")) - {b""} for v in values)) if values else set()

    async def writer(client, ident: bytes):
        values, ctx = await client.get(key, r="QUORUM")
        members = union(values) | {ident}
        await client.put(key, b",".join(sorted(members)), context=ctx, w="QUORUM")

    clients = [AsyncClient([a]) for a in cluster.addresses()]
    try:
        await asyncio.gather(*(writer(clients[i % len(clients)], b"w%02d" % i) for i in range(30)))
        values, _ = await clients[0].get(key, r="ALL")
    finally:
        for c in clients:
            await c.close()
    assert union(values) == {b"w%02d" % i for i in range(30)}
    assert len(values) <= 30


async def test_sibling_limit_refuses_blind_writes_until_resolved(cluster, rpc):
    key = b"too-many-siblings"
    node = replicas_of(cluster, key)[0]
    await call(rpc, node, "put", {"key": key, "value": b"base", "w": "ALL"})
    stale = (await call(rpc, node, "get", {"key": key, "r": "ALL"}))["context"]
    for i in range(64):  # limits.max_siblings = 64
        await call(rpc, node, "put", {"key": key, "value": b"s%d" % i, "context": stale})
    await expect_error(call(rpc, node, "put", {"key": key, "value": b"one more", "context": stale}),
                       Overloaded)
    reply = await call(rpc, node, "get", {"key": key, "r": "ALL"})
    assert len(reply["values"]) == 64
    await call(rpc, node, "put", {"key": key, "value": b"resolved", "context": reply["context"]})
    assert (await call(rpc, node, "get", {"key": key, "r": "ALL"}))["values"] == [b"resolved"]
