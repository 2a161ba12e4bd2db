"""Failures with real processes: read repair, Unavailable, Timeout, restart with data.

Keys are chosen so their three replicas (2 in dc1, 1 in dc2) are known; the coordinator
is picked explicitly. Every test leaves the cluster whole again (``restore``).
"""

from __future__ import annotations

import asyncio

from ringkv import identity, versions
from ringkv.errors import Timeout, Unavailable

from .conftest import call, expect_error, poll, replicas_of, stored


async def test_read_repair_of_a_replica_that_missed_a_write(cluster, restore, rpc):
    key = b"repair-1"
    coord, other, missed = replicas_of(cluster, key)
    await call(rpc, coord, "put", {"key": key, "value": b"old", "w": "ALL"})
    # The missed replica is down for the write. (SIGSTOP would not do: the write waits in
    # its socket buffer and is applied on SIGCONT, so nothing would be missed.) Once
    # hinted handoff exists, it must be off here, or the hint repairs before the read.
    cluster.kill(missed.index)
    ctx = (await call(rpc, coord, "get", {"key": key, "r": "TWO"}))["context"]
    await call(rpc, coord, "put", {"key": key, "value": b"new", "context": ctx, "w": "TWO"})
    cluster.start_node(missed.index)
    cluster.wait_ready(90)
    before = versions.decode(await stored(rpc, missed, key))
    assert versions.values(before) == [b"old"]  # it really missed the write (data kept)
    reply = await call(rpc, coord, "get", {"key": key, "r": "ALL"})
    assert reply["values"] == [b"new"]

    async def repaired():
        vs = await stored(rpc, missed, key)
        return vs is not None and versions.values(versions.decode(vs)) == [b"new"]

    await poll(repaired, 20, "read repair of the stale replica")
    status = await call(rpc, coord, "status", {})
    assert status["counters"]["read_repairs"] >= 1


async def test_unavailable_when_two_of_three_replicas_are_dead(cluster, restore, rpc):
    key = b"unavailable-1"
    survivor, *dead = replicas_of(cluster, key)
    for node in dead:
        cluster.kill(node.index)

    async def seen_dead():
        status = await call(rpc, survivor, "status", {})
        return not {n.node_id for n in dead} & set(status["alive"])

    await poll(seen_dead, 45, "the survivor to see both replicas down")
    err = await expect_error(
        call(rpc, survivor, "put", {"key": key, "value": b"v", "w": "QUORUM"}), Unavailable)
    assert (err.required, err.alive) == (2, 1)
    assert await stored(rpc, survivor, key) is None  # nothing written
    err = await expect_error(call(rpc, survivor, "get", {"key": key, "r": "QUORUM"}), Unavailable)
    assert (err.required, err.alive) == (2, 1)
    # a level the survivor can meet still works
    await call(rpc, survivor, "put", {"key": key, "value": b"v", "w": "ONE"})


async def test_timeout_when_replicas_are_alive_but_silent(cluster, restore, rpc):
    key = b"timeout-1"
    coord, *silent = replicas_of(cluster, key)
    for node in silent:
        cluster.pause(node.index)  # alive per membership for a few seconds, answering nothing
    # both at once: well inside the failure detector's suspect time (5 s)
    put_err, get_err = await asyncio.gather(
        expect_error(call(rpc, coord, "put", {"key": key, "value": b"v", "w": "QUORUM"}), Timeout),
        expect_error(call(rpc, coord, "get", {"key": key, "r": "ALL"}), Timeout))
    assert (put_err.required, put_err.received) == (2, 1)
    assert (get_err.required, get_err.received) == (3, 1)


async def test_restart_keeps_identity_and_data(cluster, restore, rpc):
    node = cluster.nodes[1]
    key = next(f"restart-{i}".encode() for i in range(1000)
               if node in replicas_of(cluster, f"restart-{i}".encode()))
    await call(rpc, cluster.nodes[0], "put", {"key": key, "value": b"durable", "w": "ALL"})
    ident = identity.read(node.data_dir / identity.FILE_NAME)
    assert cluster.stop(node.index) == 0  # SIGTERM: a clean shutdown
    cluster.start_node(node.index)
    cluster.wait_ready(90)
    assert identity.read(node.data_dir / identity.FILE_NAME) == ident
    status = await call(rpc, node, "status", {})
    assert status["node_id"] == ident.node_id == "n2" and status["tokens"] == len(ident.tokens)
    assert versions.values(versions.decode(await stored(rpc, node, key))) == [b"durable"]
    reply = await call(rpc, node, "get", {"key": key, "r": "ALL"})
    assert reply["values"] == [b"durable"]


async def test_crash_keeps_acknowledged_writes(cluster, restore, rpc):
    node = cluster.nodes[2]
    key = next(f"crash-{i}".encode() for i in range(1000)
               if node in replicas_of(cluster, f"crash-{i}".encode()))
    await call(rpc, cluster.nodes[0], "put", {"key": key, "value": b"synced", "w": "ALL"})
    cluster.kill(node.index)  # SIGKILL: only what the commit log synced survives
    cluster.start_node(node.index)
    cluster.wait_ready(90)
    assert versions.values(versions.decode(await stored(rpc, node, key))) == [b"synced"]
