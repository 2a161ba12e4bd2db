"""The hinted-handoff shell (ringkv.handoff) on a fake node: no sockets, no sleeps.

The store runs on the in-memory file system; the node's RPCs are futures the test settles.
"""

from __future__ import annotations

import asyncio

import pytest

from ringkv import versions
from ringkv.config import HintsConfig, RingkvConfig
from ringkv.errors import Overloaded, Timeout
from ringkv.handoff import Handoff
from ringkv.hint_store import HintStore
from ringkv.moved_writes import MovedWrites
from ringkv.node import COUNTERS
from ringkv.ring import generate_tokens, storage_key
from ringkv.streaming import Owner, RingView
from ringkv.testing.fake_clock import FakeClock
from ringkv.testing.fs import MemFileSystem

VS = versions.encode(versions.update(versions.EMPTY, {}, "n1", b"v", 1.0))


class FakeEngine:
    def __init__(self) -> None:
        self.puts: list[tuple[bytes, bytes]] = []

    async def aput(self, skey: bytes, vs: bytes) -> None:
        self.puts.append((skey, vs))


class FakeNode:
    def __init__(self, **hints) -> None:
        self.config = RingkvConfig(hints=HintsConfig(**hints))
        self.clock = FakeClock()
        self.node_id = "n1"
        self.engine = FakeEngine()
        self._addr = {"n2": ("127.0.0.1", 1), "n3": ("127.0.0.1", 2)}
        self.down = {"n2"}
        self.fail = False
        self.sent: list[tuple[str, str, dict]] = []
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.limits = self.config.limits
        self.states: dict[str, str] = {}  # what membership.state_of answers
        self.membership = self  # state_of below
        self._view = RingView([], {"dc1": 3})  # no ring: nothing is forwarded
        self.moved_writes = MovedWrites(self)

    def state_of(self, node_id: str) -> str | None:
        return self.states.get(node_id)

    def alive(self, node_id: str) -> bool:
        return node_id not in self.down

    def _request(self, node_id: str, method: str, body: dict) -> asyncio.Future:
        self.sent.append((node_id, method, body))
        fut = asyncio.get_running_loop().create_future()
        if self.fail:
            fut.set_exception(Timeout(1, 0))
        else:
            fut.set_result({})
        return fut


def handoff_for(node: FakeNode) -> Handoff:
    h = Handoff(node)
    cfg = node.config.hints
    h.store = HintStore("/d/hints", cfg.max_hints_per_target, cfg.max_hint_age_s,
                        fs=MemFileSystem())
    return h


def skey(i: int) -> bytes:
    return bytes(8) + f"k{i}".encode()


async def test_concurrent_hints_share_fsyncs_and_ack_once_durable():
    node = FakeNode()
    h = handoff_for(node)
    writes = []
    real = h.store.write
    h.store.write = lambda batch: writes.append(len(batch)) or real(batch)
    await asyncio.gather(*(h.rpc_hint_put({"skey": skey(i), "vs": VS, "target": "n2"})
                           for i in range(10)))
    assert sum(writes) == 10 and len(writes) <= 2  # group commit
    assert h.status()["pending"] == {"n2": 10}


async def test_replay_waits_for_the_target_then_drains_in_batches():
    node = FakeNode(replay_batch=3)
    h = handoff_for(node)
    for i in range(7):
        await h.add("n2", skey(i), VS)
    assert await h.replay_once() == 0 and node.sent == []  # n2 is down
    node.down.clear()
    assert await h.replay_once() == 7
    assert [m for _, m, _ in node.sent] == ["replica_put"] * 7
    assert {n for n, _, _ in node.sent} == {"n2"}
    st = h.status()
    assert st["pending"] == {} and st["hints_replayed"] == 7


async def test_failed_replay_keeps_the_hints():
    node = FakeNode()
    h = handoff_for(node)
    await h.add("n2", skey(0), VS)
    node.down.clear()
    node.fail = True
    assert await h.replay_once() == 0
    assert h.status()["pending"] == {"n2": 1}
    node.fail = False
    assert await h.replay_once() == 1  # sent again: harmless, writes are joins
    assert h.status()["pending"] == {}


async def test_expired_hints_are_dropped_not_replayed():
    node = FakeNode(max_hint_age_s=10.0)
    h = handoff_for(node)
    await h.add("n2", skey(0), VS)
    node.clock.advance(11.0)
    node.down.clear()
    assert await h.replay_once() == 0 and node.sent == []
    assert h.status()["hints_dropped_expired"] == 1 and h.status()["pending"] == {}


async def test_overflow_is_refused():
    h = handoff_for(FakeNode(max_hints_per_target=1))
    await h.add("n2", skey(0), VS)
    with pytest.raises(Overloaded):
        await h.rpc_hint_put({"skey": skey(1), "vs": VS, "target": "n2"})
    assert h.status()["hints_dropped_overflow"] == 1


async def test_hint_for_ourselves_is_applied_directly():
    node = FakeNode()
    h = handoff_for(node)
    await h.rpc_hint_put({"skey": skey(0), "vs": VS, "target": "n1"})
    assert node.engine.puts == [(skey(0), VS)] and h.status()["pending"] == {}


async def test_off_mode_keeps_no_hints():
    node = FakeNode(mode="off")
    h = handoff_for(node)
    h.missed("n2", skey(0), VS)  # no task is even started
    assert h.status()["pending"] == {}


def _ring_of_three(node: FakeNode) -> None:
    """n1 (the node), n2, n3 own the ring (RF 3: each replicates every key); n4 was removed."""
    rng = __import__("random").Random(3)
    node._view = RingView([Owner(n, "normal", generate_tokens(rng, 4)) for n in ("n1", "n2", "n3")],
                          {"dc1": 3})
    node.down = set()


async def test_hints_of_a_removed_target_go_to_the_keys_current_replicas():
    node = FakeNode()
    _ring_of_three(node)
    node.states["n4"] = "removed"  # decommissioned: out of the ring (and of _addr)
    h = handoff_for(node)
    key = storage_key(b"k")
    await h.add("n4", key, VS)
    assert await h.replay_once() == 1
    assert sorted((n, m) for n, m, _ in node.sent) == [("n2", "replica_put"), ("n3", "replica_put")]
    assert node.engine.puts == [(key, VS)]  # n1 is a replica itself: applied locally
    assert h.status()["pending"] == {} and node.counters["hints_redirected"] == 1


async def test_hints_of_an_unknown_target_are_kept():
    node = FakeNode()
    _ring_of_three(node)
    h = handoff_for(node)
    await h.add("n9", storage_key(b"k"), VS)  # maybe a node that joined, not heard of yet
    assert await h.replay_once() == 0
    assert node.sent == [] and h.status()["pending"] == {"n9": 1}


async def test_a_failed_redirect_keeps_the_hints():
    node = FakeNode()
    _ring_of_three(node)
    node.states["n4"] = "removed"
    node.fail = True
    h = handoff_for(node)
    await h.add("n4", storage_key(b"k"), VS)
    assert await h.replay_once() == 0
    assert h.status()["pending"] == {"n4": 1} and node.counters["hints_redirected"] == 0
