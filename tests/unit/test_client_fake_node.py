"""The client against tiny fake nodes on loopback (RpcServer + a dict), no real node needed.

The fake nodes share one dict (a perfectly replicated cluster) and refuse ``put``/``get``
for keys they do not replicate, so a passing request proves token-aware routing.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator

import pytest

from ringkv.client import AsyncClient, Client
from ringkv.config import LimitsConfig
from ringkv.errors import (InvalidRequest, Overloaded, RingkvError, StorageFull, Timeout,
                           TooLarge, Unavailable)
from ringkv.net.transport import RpcServer
from ringkv.ring import NodeInfo, Ring, generate_tokens, token_for

Fault = Callable[[str, dict], None]


class FakeCluster:
    """``n`` fake nodes on loopback sharing one store; ``faults[node_id]`` may raise."""

    def __init__(self, n: int = 4, rf: int = 3, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.tokens = {nid: generate_tokens(rng, 8) for nid in self.ids}
        self.rf = rf
        self.servers: dict[str, RpcServer] = {}
        self.store: dict[bytes, tuple[int, list[bytes]]] = {}
        self.calls: list[tuple[str, str, bytes | None]] = []
        self.faults: dict[str, Fault] = {}
        self.silent: set[str] = set()  # nodes that accept requests and never answer
        # True: the next put is applied, then its node closes every connection unanswered
        self.vanish_after_put = False
        self.ring: Ring | None = None

    async def start(self) -> "FakeCluster":
        for nid in self.ids:
            self.servers[nid] = await RpcServer(self._handler(nid), "127.0.0.1", 0).start()
        self.ring = Ring([self.info(nid) for nid in self.ids], {"dc1": self.rf})
        return self

    async def stop(self, nid: str | None = None) -> None:
        for name in [nid] if nid else list(self.servers):
            await self.servers[name].close()

    def info(self, nid: str) -> NodeInfo:
        return NodeInfo(nid, self.tokens[nid], port=self.servers[nid].port)

    @property
    def seeds(self) -> list[str]:
        return [f"127.0.0.1:{self.servers[nid].port}" for nid in self.ids]

    def replicas(self, key: bytes) -> list[str]:
        assert self.ring is not None
        return self.ring.replicas(token_for(key))

    def _handler(self, nid: str) -> Callable[[str, dict, str], object]:
        def handle(method: str, body: dict, peer: str) -> dict:
            self.calls.append((nid, method, body.get("key")))
            if nid in self.silent and method != "ring":
                return asyncio.Event().wait()  # never answers
            if nid in self.faults:
                self.faults[nid](method, body)
            if method == "ring":
                return {"nodes": [dict(node_id=i, host="127.0.0.1", port=self.servers[i].port,
                                       http_port=0, dc="dc1", rack="rack1",
                                       tokens=list(self.tokens[i]), state="up") for i in self.ids],
                        "replication": {"dc1": self.rf}}
            if nid not in self.replicas(body["key"]):
                raise InvalidRequest(f"{nid} does not replicate this key")
            reply = getattr(self, "_" + method)(body)
            if method == "put" and self.vanish_after_put:
                self.vanish_after_put = False
                asyncio.ensure_future(self.servers[nid].close())
                return asyncio.Event().wait()  # no reply: the connection closes first
            return reply
        return handle

    def _get(self, body: dict) -> dict:
        version, values = self.store.get(body["key"], (0, []))
        return {"values": values, "context": version.to_bytes(8, "big")}

    def _put(self, body: dict, value: bytes | None = None) -> dict:
        value = body.get("value")
        version, values = self.store.get(body["key"], (0, []))
        ctx = body["context"]  # none: supersede all (as a node does); stale: keep siblings
        kept = [] if ctx is None or int.from_bytes(ctx, "big") == version else values
        self.store[body["key"]] = (version + 1, kept + ([value] if value is not None else []))
        return {"context": (version + 1).to_bytes(8, "big")}

    def _delete(self, body: dict) -> dict:
        self._put(dict(body, value=None))
        return {}


@pytest.fixture
async def cluster():
    c = await FakeCluster().start()
    yield c
    await c.stop()


def methods(cluster: FakeCluster, name: str) -> list[tuple[str, bytes | None]]:
    return [(nid, key) for nid, m, key in cluster.calls if m == name]


async def test_requests_go_straight_to_a_replica_of_the_key(cluster):
    async with AsyncClient(cluster.seeds[:1]) as db:
        for i in range(60):
            await db.put(f"key{i}", b"v%d" % i)
            values, _ = await db.get(f"key{i}")
            assert values == [b"v%d" % i]
    routed = methods(cluster, "put") + methods(cluster, "get")
    assert len(routed) == 120  # nothing was refused and retried elsewhere
    assert all(nid in cluster.replicas(key) for nid, key in routed)
    assert len({nid for nid, _ in routed}) == 4  # load spreads over the nodes


async def test_str_and_bytes_keys_are_the_same_key(cluster):
    async with AsyncClient(cluster.seeds) as db:
        await db.put("ключ", "значение")
        assert (await db.get("ключ".encode()))[0] == ["значение".encode()]


async def test_missing_key_is_empty_list(cluster):
    async with AsyncClient(cluster.seeds) as db:
        values, ctx = await db.get(b"nope")
        assert values == [] and isinstance(ctx, bytes)


async def test_contexts_siblings_and_delete(cluster):
    async with AsyncClient(cluster.seeds) as db:
        ctx = await db.put(b"k", b"a")
        await db.put(b"k", b"b", context=ctx)
        await db.put(b"k", b"c", context=ctx)  # stale context: a sibling
        values, ctx = await db.get(b"k")
        assert sorted(values) == [b"b", b"c"]
        await db.put(b"k", b"d", context=ctx)
        assert (await db.get(b"k"))[0] == [b"d"]
        await db.delete(b"k", context=(await db.get(b"k"))[1])
        assert (await db.get(b"k"))[0] == []


async def test_resolver_returns_one_value_and_writes_it_back(cluster):
    seen: list[list[bytes]] = []

    def longest(values: list[bytes]) -> bytes:
        seen.append(sorted(values))
        return max(values, key=len)

    async with AsyncClient(cluster.seeds, resolver=longest) as db:
        ctx = await db.put(b"k", b"x")
        await db.put(b"k", b"yy", context=ctx)
        await db.put(b"k", b"zzz", context=ctx)
        values, ctx2 = await db.get(b"k")
        assert values == [b"zzz"] and seen == [[b"yy", b"zzz"]]
        assert cluster.store[b"k"][1] == [b"zzz"]  # resolved on the cluster
        assert (await db.get(b"k")) == ([b"zzz"], ctx2)
        assert len(seen) == 1  # one value: the resolver is not called


async def test_failover_when_a_replica_is_down(cluster):
    async with AsyncClient(cluster.seeds) as db:
        await db.connect()
        await cluster.stop("n1")
        keys = [f"k{i}".encode() for i in range(40)]
        keys = [k for k in keys if "n1" in cluster.replicas(k)]
        assert keys
        for k in keys:
            await db.put(k, b"v")
            assert (await db.get(k))[0] == [b"v"]
    served = methods(cluster, "put") + methods(cluster, "get")
    assert all(nid != "n1" and nid in cluster.replicas(k) for nid, k in served)


async def test_silent_replica_times_out_once_then_is_avoided(cluster):
    cluster.silent.add("n1")
    keys = [k for k in (b"s%d" % i for i in range(60)) if "n1" in cluster.replicas(k)][:10]
    async with AsyncClient(cluster.seeds, timeout=0.2, retries=2, backoff=0.001,
                           suspect_seconds=600) as db:
        for k in keys:
            assert (await db.get(k))[0] == []
    to_n1 = [k for nid, k in methods(cluster, "get") if nid == "n1"]
    assert len(to_n1) <= 1  # after its first timeout the client stops asking it


async def test_seed_down_uses_next_seed(cluster):
    await cluster.stop("n1")
    async with AsyncClient(cluster.seeds) as db:  # n1 is the first seed
        await db.put(b"k", b"v")
        assert (await db.get(b"k"))[0] == [b"v"]


async def test_no_node_reachable_is_unavailable(cluster):
    async with AsyncClient(cluster.seeds, retries=1, backoff=0.001) as db:
        await db.connect()
        await cluster.stop()
        # let the client see its pooled connections close: a put sent on one it has not yet
        # seen close is in flight when it breaks, an unknown outcome (reported as Timeout)
        await asyncio.sleep(0.1)
        with pytest.raises(Unavailable):
            await db.put(b"k", b"v")


async def test_retriable_errors_are_retried_with_a_bound(cluster):
    failures = {"left": 2}

    def flaky(method: str, body: dict) -> None:
        if method == "put" and failures["left"] > 0:
            failures["left"] -= 1
            raise Overloaded("busy")

    for nid in cluster.ids:
        cluster.faults[nid] = flaky
    async with AsyncClient(cluster.seeds, retries=3, backoff=0.001) as db:
        await db.put(b"k", b"v")
        assert len(methods(cluster, "put")) == 3
        failures["left"] = 10
        with pytest.raises(Overloaded):
            await db.put(b"k", b"v")
        assert len(methods(cluster, "put")) == 3 + 4  # 1 try + 3 retries


async def test_errors_keep_their_type_and_are_not_retried_unless_retriable(cluster):
    def refuse(method: str, body: dict) -> None:
        if method == "put":
            raise TooLarge("value", 10, 5)
        if method == "get":
            raise Timeout(2, 1, "replica slow")

    for nid in cluster.ids:
        cluster.faults[nid] = refuse
    async with AsyncClient(cluster.seeds, retries=2, backoff=0.001) as db:
        with pytest.raises(TooLarge) as info:
            await db.put(b"k", b"v")
        assert (info.value.size, info.value.limit) == (10, 5)
        assert len(methods(cluster, "put")) == 1
        with pytest.raises(Timeout) as tinfo:
            await db.get(b"k")
        assert (tinfo.value.required, tinfo.value.received) == (2, 1)
        assert len(methods(cluster, "get")) == 3


async def test_a_write_whose_retry_is_refused_after_a_timeout_reports_an_unknown_outcome(cluster):
    """A node applies a put but answers Timeout (the W acks came late); the client's retry
    is then refused with an error that says nothing was written (StorageFull, Unavailable).
    Passing that on alone would tell the caller the put did not happen, yet it did: the
    caller gets a Timeout (outcome unknown) that names both."""
    tries = {"n": 0}

    def applied_then_refused(method: str, body: dict) -> None:
        if method == "put":
            tries["n"] += 1
            if tries["n"] == 1:
                cluster._put(body)  # applied, but the answer is a Timeout
                raise Timeout(2, 1, "one replica acked in time")
            raise StorageFull("/data", 0, 1 << 20)
        if method == "delete":
            raise Unavailable(2, 1)

    for nid in cluster.ids:
        cluster.faults[nid] = applied_then_refused
    async with AsyncClient(cluster.seeds, retries=3, backoff=0.001) as db:
        with pytest.raises(Timeout, match="may have been applied.*storage full") as info:
            await db.put(b"k", b"v")
        assert isinstance(info.value.__cause__, StorageFull)
        assert (info.value.required, info.value.received) == (2, 1)
        assert tries["n"] == 2  # StorageFull is not retried
        assert (await db.get(b"k"))[0] == [b"v"]  # it was applied
        with pytest.raises(Unavailable):  # no earlier timeout: the error stays as it is
            await db.delete(b"k")


async def test_a_write_whose_connection_broke_in_flight_then_refused_reports_an_unknown_outcome(cluster):
    """A node applies a put and its connection breaks before the reply (the node goes
    away); the client fails over and the retry is refused with "nothing written". The
    first try may have been applied, so the caller gets a Timeout (outcome unknown) naming
    both, not the StorageFull alone."""
    tries = {"n": 0}

    def refused_after_the_first(method: str, body: dict) -> None:
        if method == "put":
            tries["n"] += 1
            if tries["n"] > 1:
                raise StorageFull("/data", 0, 1 << 20)

    for nid in cluster.ids:
        cluster.faults[nid] = refused_after_the_first
    cluster.vanish_after_put = True  # the first put is applied, then its node closes
    async with AsyncClient(cluster.seeds, retries=3, backoff=0.001, timeout=5.0) as db:
        with pytest.raises(Timeout, match="lost its connection in flight and may have been "
                                          "applied.*storage full") as info:
            await db.put(b"k", b"v")
        assert isinstance(info.value.__cause__, StorageFull)
        assert tries["n"] == 2
        assert (await db.get(b"k"))[0] == [b"v"]  # it was applied
        # the next write starts afresh: refused is refused, though its first node may be
        # the one that went away (refused to connect: that request never left)
        with pytest.raises(StorageFull):
            await db.put(b"k3", b"v")


async def test_limits_are_checked_before_sending(cluster):
    limits = LimitsConfig(max_key_bytes=8, max_value_bytes=16)
    async with AsyncClient(cluster.seeds, limits=limits) as db:
        with pytest.raises(TooLarge) as info:
            await db.put(b"k" * 9, b"v")
        assert info.value.what == "key"
        with pytest.raises(TooLarge) as info:
            await db.put(b"k", b"v" * 17)
        assert info.value.what == "value"
        with pytest.raises(InvalidRequest):
            await db.put(b"", b"v")
        with pytest.raises(InvalidRequest):
            await db.put(b"k", 42)  # type: ignore[arg-type]
    assert not methods(cluster, "put")


async def test_ring_is_learned_once_and_refreshed_after_a_failure(cluster):
    async with AsyncClient(cluster.seeds, refresh_interval=3600) as db:
        for i in range(20):
            await db.get(b"k%d" % i)
        assert len(methods(cluster, "ring")) == 1
        await cluster.stop("n2")
        for i in range(20):
            await db.get(b"k%d" % i)
        for _ in range(100):  # the refresh runs in the background
            if len(methods(cluster, "ring")) > 1:
                break
            await asyncio.sleep(0.01)
        assert len(methods(cluster, "ring")) >= 2


async def test_concurrent_first_requests_fetch_the_ring_once(cluster):
    async with AsyncClient(cluster.seeds) as db:
        await asyncio.gather(*(db.put(b"k%d" % i, b"v") for i in range(50)))
    assert len(methods(cluster, "ring")) == 1


def test_bad_seed_address_is_rejected():
    with pytest.raises(InvalidRequest):
        AsyncClient(["localhost"])
    with pytest.raises(InvalidRequest):
        AsyncClient([])


# ------------------------------------------------------------ the sync wrapper


@contextmanager
def cluster_in_thread(**kw: object) -> Iterator[FakeCluster]:
    """A FakeCluster served by its own loop in a thread (the sync Client blocks its caller)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    c = asyncio.run_coroutine_threadsafe(FakeCluster(**kw).start(), loop).result(10)
    try:
        yield c
    finally:
        asyncio.run_coroutine_threadsafe(c.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_sync_client_wraps_the_async_one():
    with cluster_in_thread() as c:
        with Client(c.seeds, resolver=lambda vs: b"+".join(sorted(vs))) as db:
            ctx = db.put("k", "v1")
            db.put("k", b"v2", context=ctx)
            db.put("k", b"v3", context=ctx)
            assert db.get("k") == ([b"v2+v3"], c.store[b"k"][0].to_bytes(8, "big"))
            db.delete("k", context=db.get("k")[1])
            assert db.get("k")[0] == []
            assert sorted(n.node_id for n in db.ring().nodes) == c.ids
            with pytest.raises(TooLarge):
                db.put("k", b"x" * (2 * 1024 * 1024))
        served = Counter(nid for nid, m, key in c.calls if m in ("get", "put", "delete")
                         and nid in c.replicas(key))
        assert sum(served.values()) == len([1 for _, m, _ in c.calls if m != "ring"])


def test_sync_client_from_several_threads():
    with cluster_in_thread() as c, Client(c.seeds) as db:
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(20):
                    db.put(f"t{t}-{i}", b"v")
                    assert db.get(f"t{t}-{i}")[0] == [b"v"]
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        assert len(c.store) == 80


def test_sync_client_close_is_idempotent_and_errors_surface():
    with cluster_in_thread() as c:
        db = Client(c.seeds, retries=0)
        c.faults["n1"] = c.faults["n2"] = c.faults["n3"] = c.faults["n4"] = _always_overloaded
        with pytest.raises(RingkvError):
            db.put("k", "v")
        db.close()
        db.close()


def _always_overloaded(method: str, body: dict) -> None:
    if method != "ring":
        raise Overloaded("always")
