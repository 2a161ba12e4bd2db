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
