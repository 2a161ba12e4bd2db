"""Snapshots and restore with real processes: ``ringkv snapshot --all`` on a 3-node cluster,
then one node's disk is lost and the node is restored from its snapshot.

What a user relies on: the snapshot holds every write acknowledged before it; a node
started on a restored snapshot serves, and ``ringkv repair`` brings back what was written
after the snapshot; and a restored node never mints a version stamp its lost original
already gave another write, even when that original restarted after the snapshot (before
the clock rule of ringkv/incarnation.py it reused the stamp, and the replicas took the
new write for the old one).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time

import pytest

from ringkv import incarnation, testing
from ringkv.client import AsyncClient
from ringkv.net.transport import RpcClient
from ringkv.storage.engine import Engine


def _cli(*args: str, node) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringkv.cli", *args, "--host", node.address],
                          capture_output=True, text=True, timeout=120)


async def _put_all(seeds: list[str], items: dict[bytes, bytes]) -> None:
    async with AsyncClient(seeds, timeout=5.0) as client:
        await asyncio.gather(*(client.put(k, v, w="ALL") for k, v in items.items()))


async def _get_all(seeds: list[str], keys: list[bytes]) -> dict[bytes, list[bytes]]:
    async with AsyncClient(seeds, timeout=5.0) as client:
        got = await asyncio.gather(*(client.get(k, r="ALL") for k in keys))
    return {k: sorted(values) for k, (values, _ctx) in zip(keys, got)}


async def _put_via(node, key: bytes, value: bytes) -> None:
    """A put that ``node`` coordinates (every node replicates every key here)."""
    async with RpcClient() as rpc:
        await rpc.call(node.host, node.port, "put", {"key": key, "value": value, "w": "ALL"}, 5.0)


def _incarnation_of_last_start(node) -> int:
    return incarnation.read(node.data_dir / incarnation.FILE_NAME) - 1


@pytest.fixture()
def cluster(tmp_path):
    with testing.cluster.start(3, tmp_path / "c", config={"hints": {"mode": "off"}}) as c:
        yield c


def test_snapshot_restore_after_a_lost_disk(cluster, tmp_path):
    seeds = cluster.addresses()
    n3 = cluster.nodes[2]
    before = {b"snap:%03d" % i: b"before-%03d" % i for i in range(200)}
    asyncio.run(_put_all(seeds, before))

    taken = _cli("snapshot", "--all", "--name", "s1", node=cluster.nodes[0])
    assert taken.returncode == 0, taken.stderr
    assert taken.stdout.count("snapshot s1:") == 3, taken.stdout
    snap = n3.data_dir / "snapshots" / "s1"
    listed = _cli("snapshot", "--list", node=n3)
    assert "s1" in listed.stdout and str(snap) in listed.stdout
    again = _cli("snapshot", "--name", "s1", node=n3)
    assert again.returncode != 0 and "exists already" in again.stdout

    # the snapshot alone is an engine holding every write acknowledged before it
    probe = tmp_path / "probe"
    shutil.copytree(snap / "engine", probe)
    engine = Engine.open(str(probe))
    try:
        assert sum(1 for _ in engine.scan()) == len(before)
    finally:
        engine.close()

    # after the snapshot: more writes, n3 restarts once, then coordinates a write of x
    after = {b"snap:%03d" % i: b"after-%03d" % i for i in range(0, 200, 2)}
    asyncio.run(_put_all(seeds, after))
    cluster.restart(2)
    lost_start = _incarnation_of_last_start(n3)
    asyncio.run(_put_via(n3, b"snap:x", b"x-old"))

    # n3's disk is lost; it is restored from its snapshot (kept elsewhere, as a backup is)
    cluster.kill(2)
    backup = tmp_path / "backup-s1"
    shutil.copytree(snap, backup)
    shutil.rmtree(n3.data_dir)
    shutil.copytree(backup, n3.data_dir)
    time.sleep(1.1)  # the clock rule counts seconds: the restored start is a later one
    cluster.start_node(2)
    cluster.wait_ready(60)
    assert _incarnation_of_last_start(n3) > lost_start  # no dot of the lost life reused

    # n3 coordinates x again, from its wound-back copy: the new value must win everywhere
    asyncio.run(_put_via(n3, b"snap:x", b"x-new"))
    assert asyncio.run(_get_all(seeds, [b"snap:x"])) == {b"snap:x": [b"x-new"]}

    repaired = _cli("repair", node=n3)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    expected = {k: [after.get(k, v)] for k, v in before.items()}
    assert asyncio.run(_get_all([n3.address], list(expected))) == expected

    assert _cli("snapshot", "--name", "s2", node=n3).returncode == 0
    cleared = _cli("snapshot", "--clear", "s2", node=n3)
    assert cleared.returncode == 0 and not (n3.data_dir / "snapshots" / "s2").exists()
    missing = _cli("snapshot", "--clear", "s2", node=n3)
    assert missing.returncode != 0 and "no snapshot 's2'" in missing.stdout
