"""Incarnations (D19): each start of a node gets a new number, and the dots it mints start
above that number's floor, so a copy lost in a crash can never be minted again."""

from __future__ import annotations

import time

import pytest

from ringkv import incarnation, versions
from ringkv.config import ClusterConfig, NodeConfig, RingkvConfig, StorageConfig
from ringkv.errors import ConfigError
from ringkv.node import Node
from ringkv.testing.cluster import free_port


def test_each_start_gets_a_new_number(tmp_path):
    assert [incarnation.begin(tmp_path) for _ in range(3)] == [0, 1, 2]
    assert incarnation.read(tmp_path / incarnation.FILE_NAME) == 3
    assert incarnation.dot_floor(0) == 0 and incarnation.dot_floor(2) == 2 << 32


def test_a_restart_takes_at_least_the_clock_seconds(tmp_path):
    """So a data directory wound back to an old snapshot starts above its lost original."""
    now = incarnation.CLOCK_EPOCH + 600_000.5  # 600,000 seconds after the epoch
    assert incarnation.begin(tmp_path, now) == 0  # a fresh directory: the first start is 0
    assert incarnation.begin(tmp_path, now) == 600_000
    assert incarnation.begin(tmp_path, now) == 600_001  # a second restart that second
    backup = (tmp_path / incarnation.FILE_NAME).read_text()
    for _ in range(3):
        incarnation.begin(tmp_path, now + 60)  # the original lives on, restarting
    (tmp_path / incarnation.FILE_NAME).write_text(backup)  # ... then is restored from backup
    assert incarnation.begin(tmp_path, now + 120) == 600_120  # above the original's 600,062
    assert incarnation.clock_incarnation(0.0) == 0
    assert incarnation.dot_floor(incarnation.clock_incarnation(3.8e9)) < versions.MAX_COUNTER


def test_damaged_file_is_a_config_error(tmp_path):
    (tmp_path / incarnation.FILE_NAME).write_text("three\n")
    with pytest.raises(ConfigError):
        incarnation.begin(tmp_path)


def test_floor_keeps_an_acked_write_that_a_lost_copy_would_have_collided_with():
    # n1 coordinated x: replicas stored its dot (n1, 1), then n1 crashed before its own
    # copy was durable (so the client got no ack for x). After the restart n1 holds
    # nothing for the key and coordinates y, which is acknowledged.
    x = versions.update(versions.EMPTY, {}, "n1", b"x", 1.0)
    y_without_floor = versions.update(versions.EMPTY, {}, "n1", b"y", 2.0)
    y = versions.update(versions.EMPTY, {}, "n1", b"y", 2.0, floor=incarnation.dot_floor(1))
    # Without the floor y reuses x's dot (n1, 1): each side's vv has "seen" the other's
    # sibling, so a replica holding x drops both, and the acknowledged y is lost.
    assert b"y" not in versions.values(versions.join(x, y_without_floor))
    # With it, y's dot is new and y survives on every replica, whatever it held before.
    assert versions.values(versions.join(x, y)) == [b"y"]
    assert versions.values(versions.join(y, x)) == [b"y"]


def _config(data_dir: str) -> RingkvConfig:
    return RingkvConfig(node=NodeConfig(node_id="n1", port=free_port(), http_port=free_port(),
                                        resp_port=-1, data_dir=data_dir),
                        cluster=ClusterConfig(replication={"dc1": 1}, read_level="ONE",
                                              write_level="ONE"),
                        storage=StorageConfig(sync_mode="batch")).validate()


async def _dot_of_put(data_dir: str, key: bytes, value: bytes) -> tuple[str, int]:
    node = await Node(_config(data_dir)).start()
    try:
        await node.put(key, value)
        values, ctx = await node.get(key)
        assert values == [value]
        vs = versions.decode(node.engine.get(key_skey(key)))
        ((actor, counter, _, _),) = vs[1]
        return actor, counter
    finally:
        await node.close()


def key_skey(key: bytes) -> bytes:
    from ringkv.ring import token_for

    return token_for(key).to_bytes(8, "big") + key


async def test_a_restarted_node_mints_above_its_floor(tmp_path):
    first = await _dot_of_put(str(tmp_path), b"k", b"v1")
    assert first == ("n1", 1)  # a node that never restarted mints 1, 2, 3, ...
    second = await _dot_of_put(str(tmp_path), b"k", b"v2")
    second_start = _last_incarnation(tmp_path)  # at least the clock's seconds since 2025
    assert second_start >= incarnation.clock_incarnation(time.time()) - 60
    assert second[0] == "n1" and second[1] == incarnation.dot_floor(second_start) + 1
    third = await _dot_of_put(str(tmp_path), b"other", b"v3")
    assert _last_incarnation(tmp_path) > second_start
    assert third[1] == incarnation.dot_floor(_last_incarnation(tmp_path)) + 1


def _last_incarnation(data_dir) -> int:
    """The incarnation of the node's last start (the file holds the next one)."""
    return incarnation.read(data_dir / incarnation.FILE_NAME) - 1
