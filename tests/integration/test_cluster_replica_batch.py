"""Replica copies batched per peer and loop turn (``replica_put_batch``, node_ops.ReplicaWriter):
what a batch stores and answers, and a mixed-version cluster (a peer without the method,
as during a rolling upgrade) that still takes every write.

Three real nodes in this process, over real TCP and real engines (no fakes): a node
"of the older version" is one whose handler table lacks the batch method, which is
exactly what an older build answers (``InvalidRequest: unknown method``).
"""

from __future__ import annotations

import asyncio

import pytest

from ringkv import node_ops, versions
from ringkv.config import ClusterConfig, NodeConfig, RingkvConfig, StorageConfig
from ringkv.errors import InvalidRequest
from ringkv.net.transport import RpcClient
from ringkv.node import Node
from ringkv.ring import token_for
from ringkv.testing.cluster import free_port

KEYS = 40  # puts started in one loop turn: one copy each per peer, so batches form


def _skey(key: bytes) -> bytes:
    return token_for(key).to_bytes(8, "big") + key


async def _cluster(tmp_path, n: int = 3) -> list[Node]:
    ports = [free_port() for _ in range(n)]
    nodes = []
    for i, port in enumerate(ports):
        cfg = RingkvConfig(
            node=NodeConfig(node_id=f"n{i + 1}", port=port, http_port=free_port(), resp_port=-1,
                            data_dir=str(tmp_path / f"n{i + 1}"), num_tokens=8,
                            seeds=tuple(f"127.0.0.1:{p}" for p in ports if p != port)),
            cluster=ClusterConfig(replication={"dc1": n}, read_level="ALL", write_level="ALL"),
            storage=StorageConfig(sync_mode="batch")).validate()
        nodes.append(await Node(cfg).start())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not all(m.membership.synced and len(m.ring.nodes) == n
                  and all(m.alive(o.node_id) for o in nodes) for m in nodes):
        assert loop.time() < deadline, "the in-process cluster did not settle"
        await asyncio.sleep(0.05)
    return nodes


async def _close(nodes: list[Node]) -> None:
    for node in nodes:
        await node.close()


async def _put_many(coordinator: Node, prefix: bytes) -> list[bytes]:
    keys = [prefix + b"%d" % i for i in range(KEYS)]
    await asyncio.gather(*(coordinator.put(k, b"value-" + k, level="ALL") for k in keys))
    return keys


async def test_one_turn_of_puts_sends_batches_and_every_replica_stores_them(tmp_path):
    nodes = await _cluster(tmp_path)
    try:
        coord, peers = nodes[0], nodes[1:]
        before = [p.counters["replica_put"] for p in peers]
        batches: list[int] = []
        original = coord._request

        def counting(node_id: str, method: str, body: dict):
            if method == node_ops.BATCH_METHOD:
                batches.append(len(body["items"]))
            return original(node_id, method, body)

        coord._request = counting  # observe what goes on the wire; the wire is real
        keys = await _put_many(coord, b"batched-")
        assert batches and max(batches) > 1, "no batch was sent"
        for peer, n0 in zip(peers, before):
            assert peer.counters["replica_put"] - n0 == KEYS  # every copy, batched or not
            for k in keys:
                vs = peer.engine.get(_skey(k))
                assert vs is not None and versions.values(versions.decode(vs)) == [b"value-" + k]
    finally:
        await _close(nodes)


async def test_batch_reply_lists_refused_items_and_stores_the_rest(tmp_path):
    nodes = await _cluster(tmp_path)
    rpc = RpcClient()
    try:
        target = nodes[1]
        good = versions.encode(versions.update(versions.EMPTY, {}, "n9", b"ok", 1.0))
        items = [[_skey(b"good-1"), good], [b"short", good], [_skey(b"bad-vs"), b"not a set"],
                 "not a pair", [_skey(b"good-2"), good]]
        host, port = target.server.address
        reply = await rpc.call(host, port, node_ops.BATCH_METHOD, {"items": items}, 5.0)
        assert sorted(i for i, _wire in reply["failed"]) == [1, 2, 3]
        assert all(wire["code"] == "InvalidRequest" for _i, wire in reply["failed"])
        assert target.engine.get(_skey(b"good-1")) == good
        assert target.engine.get(_skey(b"good-2")) == good
        assert target.engine.get(_skey(b"bad-vs")) is None
        with pytest.raises(InvalidRequest):
            await rpc.call(host, port, node_ops.BATCH_METHOD, {"items": []}, 5.0)
    finally:
        await rpc.close()
        await _close(nodes)


async def test_a_peer_without_the_batch_method_still_gets_every_copy(tmp_path):
    """Rolling upgrade: n3 runs the older version. The first batch it refuses is resent
    as single replica_puts, later copies go to it singly, and every put at ALL succeeds."""
    nodes = await _cluster(tmp_path)
    try:
        coord, new_peer, old_peer = nodes
        del old_peer._handlers[node_ops.BATCH_METHOD]  # what an older build answers
        sent: list[tuple[str, str]] = []
        original = coord._request

        def recording(node_id: str, method: str, body: dict):
            sent.append((node_id, method))
            return original(node_id, method, body)

        coord._request = recording
        first = await _put_many(coord, b"upgrade-a-")
        assert ("n3", node_ops.BATCH_METHOD) in sent  # tried once, refused
        del sent[:]
        second = await _put_many(coord, b"upgrade-b-")
        assert ("n3", node_ops.BATCH_METHOD) not in sent  # remembered: singles only
        assert ("n2", node_ops.BATCH_METHOD) in sent  # the upgraded peer still batches
        for peer in (new_peer, old_peer):
            for k in first + second:
                vs = peer.engine.get(_skey(k))
                assert vs is not None and versions.values(versions.decode(vs)) == [b"value-" + k]
    finally:
        await _close(nodes)
