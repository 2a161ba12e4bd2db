"""A one-node cluster (N=1), the shape of `ringkv cluster up --nodes 1` and of the Redis
comparison: its puts take the sole-replica path (no quorum machinery) and must keep every
guarantee of the general one. Real process, real commit log, SIGKILL."""

from __future__ import annotations

import asyncio

import pytest

from ringkv.client import AsyncClient
from ringkv.errors import Unavailable
from ringkv.testing import cluster as tc


@pytest.fixture
def one_node(tmp_path):
    c = tc.start(1, tmp_path, replication={"dc1": 1})
    try:
        yield c
    finally:
        c.close()


async def test_acknowledged_puts_survive_kill9_and_versions_stay_causal(one_node):
    node = one_node.nodes[0]
    async with AsyncClient([node.address]) as client:
        keys = [f"k{i}".encode() for i in range(200)]
        await asyncio.gather(*(client.put(k, b"v1-" + k) for k in keys))
        values, ctx = await client.get(b"k0")
        assert values == [b"v1-k0"]
        await client.put(b"k0", b"v2", context=ctx)           # resolves: replaces
        await client.put(b"k1", b"blind")                     # no context: replaces (D12)
        with pytest.raises(Unavailable):
            await client.put(b"k2", b"x", w="TWO")            # one replica cannot give two acks
    one_node.kill(0)  # SIGKILL right after the acks: only what was fsynced survives
    one_node.start_node(0)
    one_node.wait_ready(60)
    async with AsyncClient([node.address]) as client:
        assert (await client.get(b"k0"))[0] == [b"v2"]
        assert (await client.get(b"k1"))[0] == [b"blind"]
        assert (await client.get(b"k2"))[0] == [b"v1-k2"]  # the refused put wrote nothing
        for k in keys[3:]:
            assert (await client.get(k))[0] == [b"v1-" + k]
        values, ctx = await client.get(b"k0")
        await client.put(b"k0", b"v3", context=ctx)  # after the restart: minted above the floor
        assert (await client.get(b"k0"))[0] == [b"v3"]


async def test_a_write_waiting_out_a_write_stall_still_times_out(tmp_path):
    """During a write stall the engine's durability future is a Task (Engine._durable_future),
    which cannot be failed from outside: the request timeout must still end the wait, with
    Timeout, instead of raising inside its timer and leaving the put waiting."""
    from ringkv.config import ClusterConfig, NodeConfig, RingkvConfig
    from ringkv.errors import Timeout
    from ringkv.node import Node
    from ringkv.testing.cluster import free_port

    cfg = RingkvConfig(node=NodeConfig(node_id="n1", port=free_port(), http_port=free_port(),
                                       resp_port=-1, data_dir=str(tmp_path / "n1")),
                       cluster=ClusterConfig(replication={"dc1": 1},
                                             request_timeout_ms=200)).validate()
    node = await Node(cfg).start()
    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    stalled = asyncio.ensure_future(asyncio.sleep(30))  # a durability wait that is a Task
    try:
        t0 = loop.time()
        with pytest.raises(Timeout):
            await node._bounded(stalled)
        assert loop.time() - t0 < 5
        assert not stalled.done()  # the engine's own wait is left to finish by itself
        assert errors == []        # nothing raised inside the timer
    finally:
        stalled.cancel()
        await node.close()
