"""Data-center failure: cut dc2 off; LOCAL_QUORUM keeps working in dc1, EACH_QUORUM fails.

Five real nodes, each in its own network namespace: n1..n3 in dc1, n4 and n5 in dc2,
replication {dc1: 3, dc2: 2}, so every node is a replica of every key and no request is
forwarded. Blackhole routes between every dc1 host and every dc2 host (both ways) cut
the data centers apart; the client namespace still reaches all nodes, and the test talks
straight to dc1 coordinators. Once each dc1 node's membership sees n4 and n5 down
(waited for, at most 30 s), for keys written through each dc1 coordinator:

- ``put``/``get`` at LOCAL_QUORUM succeed, and the get returns what was put;
- ``put``/``get`` at EACH_QUORUM fail with ``Unavailable`` (nothing written).

After healing, EACH_QUORUM works again (at most 30 s). Runs in both hints modes: sloppy
quorum must not let a fallback node in dc1 stand in for dc2's quorum.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from ringkv.errors import RingkvError, Unavailable
from ringkv.net.transport import RpcClient
from tests.conftest import require_root, require_tool

pytestmark = pytest.mark.root

DCS = ["dc1", "dc1", "dc1", "dc2", "dc2"]
DC1, DC2 = [0, 1, 2], [3, 4]
REPLICATION = {"dc1": 3, "dc2": 2}


async def _rpc(rpc: RpcClient, address: str, method: str, body: dict, timeout: float = 5.0) -> dict:
    host, _, port = address.rpartition(":")
    return await rpc.call(host, int(port), method, body, timeout)


async def _poll(cond, timeout: float, what: str) -> float:
    start = time.monotonic()
    while True:
        if await cond():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


async def _states(rpc: RpcClient, address: str) -> dict[str, str]:
    try:
        reply = await _rpc(rpc, address, "ring", {}, 2.0)
    except (RingkvError, OSError):
        return {}
    return {n["node_id"]: n["state"] for n in reply["nodes"]}


async def _each_quorum_fails(rpc: RpcClient, address: str, key: bytes) -> None:
    with pytest.raises(Unavailable):
        await _rpc(rpc, address, "put", {"key": key, "value": b"x", "w": "EACH_QUORUM"})
    with pytest.raises(Unavailable):
        await _rpc(rpc, address, "get", {"key": key, "r": "EACH_QUORUM"})


async def _scenario(addrs: list[str], topo, log: list[str]) -> None:
    rpc = RpcClient(connect_timeout=2.0)
    try:
        names = {f"n{i + 1}" for i in range(5)}
        await _poll(lambda: _all_see(rpc, addrs, names, "normal"), 60, "the cluster to form")
        await _rpc(rpc, addrs[0], "put", {"key": b"dc-before", "value": b"v", "w": "EACH_QUORUM"})

        topo.partition(DC1, DC2, "blackhole")
        t = await _poll(lambda: _all_see(rpc, [addrs[i] for i in DC1], {"n4", "n5"}, "down"),
                        30, "dc1 to see n4 and n5 down")
        log.append(f"dc1 saw dc2 down after {t:.1f}s")
        for i in DC1:
            key = f"dc-local-{i}".encode()
            reply = await _rpc(rpc, addrs[i], "put", {"key": key, "value": b"local",
                                                      "w": "LOCAL_QUORUM"})
            assert reply["context"]
            got = await _rpc(rpc, addrs[i], "get", {"key": key, "r": "LOCAL_QUORUM"})
            assert got["values"] == [b"local"]
            await _each_quorum_fails(rpc, addrs[i], f"dc-each-{i}".encode())

        topo.heal()
        t = await _poll(lambda: _each_quorum_ok(rpc, addrs[0]), 30, "EACH_QUORUM after healing")
        log.append(f"EACH_QUORUM back {t:.1f}s after healing")
    finally:
        await rpc.close()


async def _all_see(rpc: RpcClient, addrs: list[str], nodes: set[str], state: str) -> bool:
    views = [await _states(rpc, a) for a in addrs]
    return all(v and all(v.get(n) == state for n in nodes) for v in views)


async def _each_quorum_ok(rpc: RpcClient, address: str) -> bool:
    try:
        await _rpc(rpc, address, "put", {"key": b"dc-after", "value": b"v", "w": "EACH_QUORUM"})
        return True
    except RingkvError:
        return False


@pytest.mark.parametrize("mode", ["sloppy", "strict"])
def test_dc_cut_off_local_quorum_works_each_quorum_unavailable(tmp_path, mode):
    require_root()
    require_tool("ip", "iproute2")
    from ringkv.chaos.netns import Topology, call_in_netns
    from ringkv.chaos.nodes import NodeSet

    topo = Topology(5, subnet=2)
    nodes = None
    log: list[str] = []
    try:
        topo.create()
        nodes = NodeSet(topo, tmp_path, 5, dcs=DCS, replication=REPLICATION, config={
            "membership": {"gossip_interval_s": 0.2, "suspect_after_s": 1.0,
                           "probe_interval_s": 0.4},
            "cluster": {"request_timeout_ms": 1000}, "hints": {"mode": mode}})
        for i in range(5):
            nodes.start(i)
        nodes.wait_serving(list(range(5)), 60)
        addrs = nodes.addresses()
        try:
            call_in_netns(topo.client, lambda: asyncio.run(_scenario(addrs, topo, log)), 180)
        except BaseException:
            print("\n".join(log))
            for n in nodes.nodes:
                print(f"--- {n.node_id}\n{n.log_tail(15)}")
            raise
        print("\n".join(log))
    finally:
        if nodes is not None:
            nodes.close()
        errors = topo.remove()
    assert not errors, errors
