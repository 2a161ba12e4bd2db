"""Membership changes while serving, with real node processes (docs/topology.md).

One cluster goes through a sequence (the tests run in file order and build on each other):
n1..n3 with data -> n4 joins while a writer writes -> n5 joins, is SIGKILLed mid-stream
and resumes -> n5 is decommissioned while a writer writes -> n4 is SIGKILLed and removed
(removenode) -> n3 is SIGKILLed and replaced by n6 with its tokens. After each step every
acknowledged write is read back at ALL and the replicas the ring names hold the keys.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import pytest

from ringkv.client import Client
from ringkv.errors import RingkvError
from ringkv.net.transport import RpcClient
from ringkv.ring import NodeInfo, Ring, storage_key, token_for
from ringkv.testing import cluster as tc

REPLICATION = {"dc1": 3}
CONFIG = {
    "membership": {"gossip_interval_s": 0.2, "suspect_after_s": 1.0, "probe_interval_s": 0.5},
    "cluster": {"request_timeout_ms": 1000},
    "streaming": {"batch_bytes": 4096, "settle_timeout_s": 10.0, "retry_interval_s": 0.5},
}
INITIAL_KEYS = 600


class State:
    keys: list[bytes] = []  # every key whose write was acknowledged (value = key)


@pytest.fixture(scope="module")
def cl(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("topology")
    c = tc.start(3, base, replication=REPLICATION, num_tokens=16, config=CONFIG, timeout=60)
    try:
        yield c
    finally:
        c.close()


def add_node(c: tc.Cluster, name: str, streaming: dict) -> tc.NodeHandle:
    """Lay out and start one more node that seeds from n1 and n2 (does not wait)."""
    host = "127.0.0.1"
    node = tc.NodeHandle(len(c.nodes), name, host, tc.free_port(host), tc.free_port(host),
                         tc.free_port(host), "dc1", c.base_dir / name)
    extra = {k: dict(v) for k, v in CONFIG.items()}
    extra["streaming"].update(streaming)
    tc._write_config(node, "rack1", [c.nodes[0].address, c.nodes[1].address], REPLICATION, 16,
                     extra)
    c.nodes.append(node)
    c.start_node(node.index)
    return node


def client(c: tc.Cluster) -> Client:
    return Client([n.address for n in c.nodes if n.wanted], timeout=3.0).connect()


def write_keys(c: tc.Cluster, prefix: str, count: int, w: str = "ALL") -> list[bytes]:
    """Write ``count`` keys at ``w``; a transient failure (a node briefly suspected on a
    busy machine) is retried a few times."""
    with client(c) as cli:
        keys = [f"{prefix}-{i}".encode() for i in range(count)]
        for k in keys:
            for attempt in range(5):
                try:
                    cli.put(k, k, w=w)
                    break
                except RingkvError:
                    if attempt == 4:
                        raise
                    time.sleep(0.5)
    return keys


class Writer:
    """A background writer at QUORUM that records each acknowledged key."""

    def __init__(self, c: tc.Cluster, prefix: str) -> None:
        self.c, self.prefix = c, prefix
        self.acked: list[bytes] = []
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with client(self.c) as cli:
            for i in range(100_000):
                if self.stop.is_set():
                    return
                key = f"{self.prefix}-{i}".encode()
                try:
                    cli.put(key, key, w="QUORUM")
                    self.acked.append(key)
                except RingkvError:
                    self.failed += 1
                time.sleep(0.005)

    def __enter__(self) -> "Writer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def ring_of(node: tc.NodeHandle) -> Ring:
    reply = node.http_json("/ring")
    nodes = [NodeInfo(n["node_id"], tuple(n["tokens"]), n["dc"], n["rack"], n["host"], n["port"])
             for n in reply["nodes"] if n["state"] in ("normal", "leaving", "down")]
    return Ring(nodes, reply["replication"])


def states(node: tc.NodeHandle) -> dict[str, str]:
    try:
        return {n["node_id"]: n["state"] for n in node.http_json("/ring")["nodes"]}
    except OSError:
        return {}


def streams(node: tc.NodeHandle) -> dict:
    try:
        return node.http_json("/status").get("streaming") or {}
    except OSError:
        return {}


def wait_done(node: tc.NodeHandle, timeout: float = 60.0) -> dict:
    return tc.wait_until(lambda: streams(node).get("status") == "done" and streams(node),
                         time.monotonic() + timeout,
                         lambda: f"{node.node_id} to finish streaming: {streams(node)}\n"
                                 f"{node.log_tail()}")


def wait_states(c: tc.Cluster, expect: dict[str, str | None], timeout: float = 30.0) -> None:
    """Every running node's ring shows ``expect`` (None = not listed)."""
    def ok() -> bool:
        for n in c.nodes:
            if n.running and not n.paused:
                seen = states(n)
                if any(seen.get(k) != v for k, v in expect.items()):
                    return False
        return True

    tc.wait_until(ok, time.monotonic() + timeout,
                  lambda: f"states {expect}: " + "; ".join(
                      f"{n.node_id} sees {states(n)}" for n in c.nodes if n.running))


def check_all_readable(c: tc.Cluster, keys: list[bytes]) -> None:
    missing = []
    with client(c) as cli:
        for k in keys:
            values, _ = cli.get(k, r="ALL")
            if k not in values:
                missing.append(k)
    assert not missing, f"{len(missing)} of {len(keys)} acknowledged keys lost: {missing[:5]}"


def check_replicas_hold(c: tc.Cluster, keys: list[bytes], only: str | None = None,
                        settle: float = 10.0) -> None:
    """Every replica the ring names (or only ``only``) holds each key (replica_get).

    Called before any read, so read repair cannot have filled in what streaming missed;
    copies still missing are asked again for up to ``settle`` seconds (a write that timed
    out on a replica reaches it as a hint)."""
    live = [n for n in c.nodes if n.running]
    ring = ring_of(live[0])
    want = [(k, r) for k in keys for r in ring.replicas(token_for(k)) if only in (None, r)]
    assert want
    deadline = time.monotonic() + settle
    for _ in range(100):
        want = _absent(c, want)
        if not want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not want, f"{len(want)} replica copies missing: {want[:5]}"


def _absent(c: tc.Cluster, want: list[tuple[bytes, str]]) -> list[tuple[bytes, str]]:

    async def fetch() -> list[tuple[bytes, str]]:
        async with RpcClient(connect_timeout=2.0) as rpc:
            sem = asyncio.Semaphore(64)

            async def one(k: bytes, r: str):
                node = c.node(r)
                async with sem:
                    reply = await rpc.call(node.host, node.port, "replica_get",
                                           {"skey": storage_key(k)}, 3.0)
                return None if reply.get("vs") else (k, r)

            return [x for x in await asyncio.gather(*(one(k, r) for k, r in want)) if x]

    return asyncio.run(fetch())


def ringkv(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "ringkv.cli", *args], capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"ringkv {' '.join(args)}: {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


# -- the sequence ------------------------------------------------------------------------


def test_join_while_writing(cl: tc.Cluster):
    State.keys = write_keys(cl, "init", INITIAL_KEYS)
    with Writer(cl, "during-join") as writer:
        n4 = add_node(cl, "n4", {"join": True})
        assert tc.wait_until(lambda: states(cl.nodes[0]).get("n4") == "joining"
                             or states(cl.nodes[0]).get("n4") == "normal",
                             time.monotonic() + 20, "n4 to be seen")
        done = wait_done(n4)
        assert n4.http_json("/status")["counters"]["replica_put"] > 0  # pending writes
        wait_states(cl, {"n4": "normal"})
        time.sleep(0.5)
    assert writer.acked, "the writer got no write through"
    assert done["keys"] > 0 and done["op"] == "join"
    State.keys += writer.acked
    check_replicas_hold(cl, State.keys, only="n4")
    check_all_readable(cl, State.keys)


def test_join_resumes_after_kill(cl: tc.Cluster):
    n5 = add_node(cl, "n5", {"join": True, "max_bytes_per_s": 6000})
    tc.wait_until(lambda: streams(n5).get("keys", 0) > 0 and streams(n5),
                  time.monotonic() + 40, lambda: f"n5 to stream: {streams(n5)}")
    cl.kill(n5.index)
    saved = json.loads((n5.data_dir / "streaming.json").read_text())
    assert saved["status"] == "streaming" and saved["keys"] > 0
    assert len(saved["done"]) < len(saved["tasks"]), "the join finished before the kill"
    cl.start_node(n5.index)
    done = wait_done(n5, 90)
    assert done["keys"] >= saved["keys"]
    log = n5.log_path.read_text()
    assert log.count("ranges to stream") == 1, "the resumed join planned again"
    wait_states(cl, {"n5": "normal"})
    check_replicas_hold(cl, State.keys, only="n5")
    check_all_readable(cl, State.keys)


def test_decommission_while_writing(cl: tc.Cluster):
    n5 = cl.node("n5")
    with Writer(cl, "during-decommission") as writer:
        out = ringkv("decommission", "--host", n5.address, "--timeout", "90")
        tc.wait_until(lambda: not n5.running, time.monotonic() + 30, "n5 to exit")
        n5.wanted = False
        wait_states(cl, {"n5": None})
        time.sleep(0.5)
    assert "done" in out.stdout
    State.keys += writer.acked
    check_replicas_hold(cl, State.keys)
    check_all_readable(cl, State.keys)


def test_removenode_of_a_killed_node(cl: tc.Cluster):
    n4 = cl.node("n4")
    refused = subprocess.run([sys.executable, "-m", "ringkv.cli", "removenode", "n4", "--host",
                              cl.nodes[0].address], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 3 and "not down" in refused.stderr
    cl.kill(n4.index)
    wait_states(cl, {"n4": "down"})
    out = ringkv("removenode", "n4", "--host", cl.nodes[0].address, "--timeout", "90")
    assert "done" in out.stdout
    wait_states(cl, {"n4": None})
    check_replicas_hold(cl, State.keys)  # three live replicas of every key
    check_all_readable(cl, State.keys)


def test_replace_a_dead_node(cl: tc.Cluster):
    n3 = cl.node("n3")
    cl.kill(n3.index)
    wait_states(cl, {"n3": "down"})
    tokens = next(n["tokens"] for n in cl.nodes[0].http_json("/ring")["nodes"]
                  if n["node_id"] == "n3")
    n6 = add_node(cl, "n6", {"replace": "n3"})
    done = wait_done(n6, 60)
    assert done["op"] == "replace" and done["replacing"] == "n3"
    wait_states(cl, {"n6": "normal", "n3": None})
    mine = next(n["tokens"] for n in cl.nodes[0].http_json("/ring")["nodes"]
                if n["node_id"] == "n6")
    assert mine == tokens
    check_replicas_hold(cl, State.keys, only="n6")
    check_all_readable(cl, State.keys)
    shown = ringkv("streams", "--host", n6.address).stdout
    assert "replace of n6 (replacing n3): done" in shown, shown


def test_decommissioned_node_refuses_to_start(cl: tc.Cluster):
    n5 = cl.node("n5")
    proc = subprocess.run([sys.executable, "-m", "ringkv.server", "--config", str(n5.config_path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "decommissioned" in proc.stderr
