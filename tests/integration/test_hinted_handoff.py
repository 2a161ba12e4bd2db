"""Sloppy quorum and hinted handoff with real processes (docs/hints.md).

Clusters of their own (fast gossip so a SIGKILLed node is declared down in ~1-2 s):
five nodes in sloppy mode and three in strict mode, N = 3 in one data center. A write
whose replica is down goes to a stand-in (sloppy) or is refused at W=ALL (strict); the
hint is replayed once the replica is back, and the holder's hint store ends empty.
"""

from __future__ import annotations

import urllib.request

import pytest

from ringkv import versions
from ringkv.errors import RingkvError, Unavailable
from ringkv.ring import token_for
from ringkv.testing import cluster as tc

from .conftest import call, expect_error, poll, ring_of, stored

FAST = {"membership": {"gossip_interval_s": 0.2, "suspect_after_s": 1.0,
                       "probe_interval_s": 0.2},
        "cluster": {"request_timeout_ms": 1000}}


def start(tmp_path_factory, n: int, mode: str) -> tc.Cluster:
    config = dict(FAST, hints={"mode": mode, "replay_interval_s": 0.2})
    return tc.start(n, tmp_path_factory.mktemp(f"hints-{mode}"), replication={"dc1": 3},
                    num_tokens=8, config=config, timeout=90)


@pytest.fixture(scope="module")
def sloppy(tmp_path_factory):
    c = start(tmp_path_factory, 5, "sloppy")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    c = start(tmp_path_factory, 3, "strict")
    try:
        yield c
    finally:
        c.close()


async def hints_of(rpc, node: tc.NodeHandle) -> dict:
    return (await call(rpc, node, "status", {}))["hints"]


async def wait_down(rpc, observer: tc.NodeHandle, dead: tc.NodeHandle) -> None:
    async def seen_down():
        return dead.node_id not in (await call(rpc, observer, "status", {}))["alive"]
    await poll(seen_down, 20, f"{observer.node_id} to see {dead.node_id} down")


async def has_value(rpc, node: tc.NodeHandle, key: bytes, value: bytes) -> bool:
    try:
        vs = await stored(rpc, node, key)
    except RingkvError:  # a pooled connection to a restarted node fails once
        return False
    return vs is not None and value in versions.values(versions.decode(vs))


async def test_sloppy_write_goes_to_a_stand_in_and_is_replayed(sloppy, rpc):
    ring = ring_of(sloppy)
    key = b"hinted-1"
    pref = ring.replicas(token_for(key))
    coord, _, dead = (sloppy.node(n) for n in pref)
    holder = sloppy.node(next(n for n in ring.walk(token_for(key)) if n not in pref))
    sloppy.kill(dead.index)
    await wait_down(rpc, coord, dead)

    await call(rpc, coord, "put", {"key": key, "value": b"q", "w": "QUORUM"})
    await call(rpc, coord, "put", {"key": b"hinted-1", "value": b"all", "w": "ALL"})
    held = await hints_of(rpc, holder)
    assert held["pending"] == {dead.node_id: 2}  # durable before the acks
    assert held["hints_stored"] == 2
    assert await stored(rpc, holder, key) is None  # a hint, not a replica copy
    url = f"http://{holder.host}:{holder.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        metrics = resp.read().decode()
    assert f'ringkv_hints_pending{{target="{dead.node_id}"}} 2.0' in metrics

    sloppy.kill(holder.index)  # the hints survive a crash of their holder
    sloppy.start_node(holder.index)
    sloppy.wait_ready(60)
    await poll(lambda: _pending_is(rpc, holder, {dead.node_id: 2}), 10, "hints after restart")

    sloppy.start_node(dead.index)
    sloppy.wait_ready(60)
    await poll(lambda: has_value(rpc, dead, key, b"all"), 20, "the hint replayed to the owner")

    async def drained():
        h = await hints_of(rpc, holder)  # counters restart with the process
        return h["pending"] == {} and h["hints_replayed"] == 2
    await poll(drained, 10, "the holder's hint store to empty")


async def test_strict_all_is_unavailable_and_writes_nothing(strict, rpc):
    ring = ring_of(strict)
    key = b"strict-1"
    coord, other, dead = (strict.node(n) for n in ring.replicas(token_for(key)))
    strict.kill(dead.index)
    try:
        await wait_down(rpc, coord, dead)
        err = await expect_error(
            call(rpc, coord, "put", {"key": key, "value": b"v", "w": "ALL"}), Unavailable)
        assert (err.required, err.alive) == (3, 2)
        assert await stored(rpc, coord, key) is None and await stored(rpc, other, key) is None
        assert (await hints_of(rpc, coord))["pending"] == {}

        # QUORUM is met by the live replicas; the coordinator keeps a hint (not counted)
        await call(rpc, coord, "put", {"key": key, "value": b"q", "w": "QUORUM"})
        await poll(lambda: _pending_is(rpc, coord, {dead.node_id: 1}), 10, "a local hint")
    finally:
        strict.start_node(dead.index)
        strict.wait_ready(60)
    await poll(lambda: has_value(rpc, dead, key, b"q"), 20, "the hint replayed")
    await poll(lambda: _pending_is(rpc, coord, {}), 10, "the coordinator's hints to drain")


async def test_replica_that_times_out_gets_a_hint(strict, rpc):
    ring = ring_of(strict)
    key = b"strict-timeout-1"
    coord, _, slow = (strict.node(n) for n in ring.replicas(token_for(key)))
    strict.pause(slow.index)  # alive per membership for ~1 s, but silent
    try:
        await call(rpc, coord, "put", {"key": key, "value": b"t", "w": "TWO"})
        await poll(lambda: _pending_is(rpc, coord, {slow.node_id: 1}), 10,
                   "a hint for the replica that did not ack in time")
    finally:
        strict.resume(slow.index)
        strict.wait_ready(60)
    await poll(lambda: _pending_is(rpc, coord, {}), 20, "the hint replayed after resume")
    assert await has_value(rpc, slow, key, b"t")


async def _pending_is(rpc, node: tc.NodeHandle, want: dict) -> bool:
    try:
        return (await hints_of(rpc, node))["pending"] == want
    except RingkvError:  # a pooled connection to a restarted node fails once
        return False
