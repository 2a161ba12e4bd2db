"""RESP against a one-node cluster (N=1), the shape of the Redis comparison: pipelined plain
GETs are answered at once and a pipelined group's plain SETs are applied together with one
durability wait (ringkv/resp_server.py ``_run_group``). These tests hold that hot path to
the same replies, errors, ordering, counters and durability as the general one. Real
process, real commit log, SIGKILL."""

from __future__ import annotations

import pytest
import redis
from redis.exceptions import ResponseError

from ringkv.testing import cluster as tc

MAX_VALUE = 1000


@pytest.fixture
def one_node(tmp_path):
    c = tc.start(1, tmp_path, replication={"dc1": 1},
                 config={"limits": {"max_value_bytes": MAX_VALUE}})
    try:
        yield c
    finally:
        c.close()


def _client(node: tc.NodeHandle) -> redis.Redis:
    return redis.Redis(port=node.http_json("/status")["resp_port"], socket_timeout=10)


def _pipeline(r: redis.Redis, build) -> list:
    pipe = r.pipeline(transaction=False)
    build(pipe)
    return pipe.execute(raise_on_error=False)


def test_pipelined_sets_and_gets_reply_in_order_with_per_command_errors(one_node):
    node = one_node.nodes[0]
    r = _client(node)
    before = node.http_json("/status")["counters"]

    def build(p):
        for i in range(40):
            p.set(f"k{i}", f"v{i}")
        p.set("big", b"x" * (MAX_VALUE + 1))  # TooLarge: its own error, the others go on
        p.get("k3")                             # reads a key this pipeline wrote: sees it
        p.set("k3", "again")
        p.get("k3")
        p.get("missing")
        p.set("opt", "1", nx=True)              # not plain: the general SET path
        p.get("opt")
        for i in range(40):
            p.get(f"k{i}")
            if i == 20:
                p.get("K" * 1025)               # over limits.max_key_bytes: its own error

    out = _pipeline(r, build)
    assert out[:40] == [True] * 40
    assert isinstance(out[40], ResponseError) and str(out[40]).startswith("TOOLARGE")
    assert out[41:47] == [b"v3", True, b"again", None, True, b"1"]
    assert isinstance(out[68], ResponseError) and str(out[68]).startswith("TOOLARGE")
    del out[68]
    assert out[47:] == [b"again" if i == 3 else f"v{i}".encode() for i in range(40)]
    after = node.http_json("/status")["counters"]
    # every put and get counted exactly once (40 + 1 + 1 sets ok; the TooLarge one never
    # reached the node; SET NX reads first)
    assert after["put"] - before["put"] == 42
    assert after["get"] - before["get"] == 4 + 40 + 1  # 4 GETs, 40 GETs, the NX read
    r.close()


def test_get_of_siblings_is_an_error_and_levels_apply(one_node):
    r = _client(one_node.nodes[0])
    stale, = r.execute_command("RINGKV.GETALL", "cart")
    r.execute_command("RINGKV.PUT", "cart", "apple", stale)
    r.execute_command("RINGKV.PUT", "cart", "pear", stale)
    out = _pipeline(r, lambda p: (p.get("cart"), p.get("cart"), p.set("other", "x")))
    for e in out[:2]:
        assert isinstance(e, ResponseError) and str(e).startswith("SIBLINGS 2 siblings")
    assert out[2] is True
    r.set("cart", "resolved")  # a plain SET supersedes what the only replica holds
    assert r.get("cart") == b"resolved"
    r.execute_command("RINGKV.LEVEL", "TWO", "TWO")  # one replica cannot meet TWO
    out = _pipeline(r, lambda p: (p.set("a", "1"), p.set("b", "2"), p.get("cart"), p.get("b")))
    assert len(out) == 4
    for e in out:
        assert isinstance(e, ResponseError) and str(e).startswith("UNAVAILABLE"), e
    r.execute_command("RINGKV.LEVEL", "-", "-")
    assert r.get("a") is None and r.get("cart") == b"resolved"  # the refused SETs wrote nothing
    r.close()


def test_acknowledged_pipelined_sets_survive_kill9(tmp_path):
    # fsyncs at least 0.3 s apart: an OK sent before its group's fsync would be followed
    # by the SIGKILL while the write still sits in the node's commit-log buffer
    one_node = tc.start(1, tmp_path, replication={"dc1": 1},
                        config={"storage": {"group_commit_window_us": 300_000,
                                            "group_commit_min_writes": 1}})
    try:
        _sets_survive_kill9(one_node)
    finally:
        one_node.close()


def _sets_survive_kill9(one_node: tc.Cluster) -> None:
    r = _client(one_node.nodes[0])
    r.set("warm", "up")  # the next fsync is now at least a window away
    keys = [f"d{i}" for i in range(500)]
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.set(k, "v-" + k)
    assert pipe.execute() == [True] * len(keys)  # each OK only once its group is fsynced
    one_node.kill(0)
    r.close()
    one_node.start_node(0)
    one_node.wait_ready(60)
    r = _client(one_node.nodes[0])
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.get(k)
    assert pipe.execute() == [b"v-" + k.encode() for k in keys]
    r.close()
