"""A replica whose disk fills up (docs/decisions.md D36), with real processes and a real
small file system: node n3 of three keeps its data on a 40 MiB tmpfs the test mounts (as
root) and removes. Below ``storage.min_free_bytes`` n3 refuses writes whole with
StorageFull; the cluster keeps taking W=2 writes on the other two, nothing acknowledged is
lost, a write that needs n3 names the full disk in its error, and once the file system
grows n3 takes writes again without a restart. The disk never fills: no commit-log
write fails."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from ringkv.client import AsyncClient
from ringkv.errors import StorageFull, Timeout
from ringkv.testing import cluster as tc

from ..conftest import require_root, require_tool

MiB = 1 << 20
VALUE = b"x" * 10_000


@pytest.fixture
def small_disk(tmp_path):
    """tmp_path/n3 as a 40 MiB tmpfs (n3's data directory and log live there)."""
    root = _tmpfs(tmp_path / "n3", "40m")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def _tmpfs(root, size: str):
    """Mount a ``size`` tmpfs at ``root`` (made here), as root; the caller unmounts it."""
    require_root("needs root to mount a small tmpfs as a node's data directory")
    require_tool("mount", "mount")
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], check=True)
    return root


def _one_node_unguarded(tmp_path) -> tc.Cluster:
    """One node (N=1) on tmp_path/n1, with the free-space guard off (D36)."""
    return tc.start(1, tmp_path, replication={"dc1": 1},
                    config={"storage": {"min_free_bytes": 0, "memtable_bytes": 64 * MiB}})


def _engine(cluster: tc.Cluster, i: int) -> dict:
    return cluster.nodes[i].http_json("/status")["engine"]


async def test_a_full_replica_refuses_writes_the_cluster_keeps_serving_and_it_recovers(
        tmp_path, small_disk):
    cluster = tc.start(3, tmp_path, config={
        "storage": {"min_free_bytes": 24 * MiB, "memtable_bytes": 4 * MiB,
                    "segment_bytes": 4 * MiB}})
    try:
        async with AsyncClient(cluster.addresses(), timeout=5.0) as client:
            acked: list[bytes] = []
            deadline = time.monotonic() + 90
            i = 0
            while not _engine(cluster, 2)["storage_full"]:
                assert i < 4_000 and time.monotonic() < deadline, \
                    f"n3 never refused a write: {_engine(cluster, 2)}"
                batch = [b"k%05d" % (i + j) for j in range(50)]
                await asyncio.gather(*(client.put(k, VALUE, w=2) for k in batch))
                acked += batch
                i += 50
            # n3 refuses; the other two replicas still make W=2
            more = [b"after%03d" % j for j in range(100)]
            await asyncio.gather(*(client.put(k, VALUE, w=2) for k in more))
            acked += more
            eng = _engine(cluster, 2)
            assert eng["storage_full"] and eng["writes_refused"] > 0
            assert os.statvfs(small_disk).f_bavail > 0  # refused before the disk filled
            log = cluster.nodes[2].log_path.read_text()
            assert "commit log write failed" not in log and "refusing writes" in log

            shown = subprocess.run(  # what an operator's `ringkv status` says
                [sys.executable, "-m", "ringkv.cli", "status", "--host", cluster.nodes[0].address],
                capture_output=True, text=True, timeout=60).stdout
            assert "Storage: n3 refuses writes, disk nearly full" in shown, shown

            with pytest.raises(Timeout, match="storage full"):  # W=3 needs n3: says why
                await client.put(b"needs-all", VALUE, w="ALL")

            for k in acked[::23]:  # nothing acknowledged is lost
                assert (await client.get(k, r=2))[0] == [VALUE]

            subprocess.run(["mount", "-o", "remount,size=160m", str(small_disk)], check=True)
            deadline = time.monotonic() + 30
            while True:  # n3 reads its free space again within a second
                try:
                    await client.put(b"needs-all", b"now", w="ALL")
                    break
                except Timeout:
                    assert time.monotonic() < deadline, f"n3 stayed full: {_engine(cluster, 2)}"
                    await asyncio.sleep(0.5)
            # (the client's own retries of the failed puts went through other coordinators
            # and may have left concurrent copies of the same value: siblings, all "now")
            assert set((await client.get(b"needs-all", r="ALL"))[0]) == {b"now"}
            assert _engine(cluster, 2)["storage_full"] is False
            assert cluster.nodes[2].proc is not None and cluster.nodes[2].proc.poll() is None
    finally:
        cluster.close()


async def test_a_node_that_cannot_replay_its_commit_log_says_so_and_loses_nothing(tmp_path):
    """After a crash, opening the engine writes the commit log's records to a new table. On
    a disk too full for it the node exits with the reason and what to do, keeps its commit
    log, and starts with every acknowledged write once space is freed."""
    root = _tmpfs(tmp_path / "n1", "24m")
    cluster = _one_node_unguarded(tmp_path)
    try:
        keys = [b"k%04d" % i for i in range(600)]  # ~6 MiB, all in the commit log
        async with AsyncClient(cluster.addresses(), timeout=5.0) as client:
            for i in range(0, len(keys), 50):
                await asyncio.gather(*(client.put(k, VALUE) for k in keys[i:i + 50]))
        cluster.kill(0)
        free = os.statvfs(root).f_bavail * os.statvfs(root).f_frsize
        (root / "filler").write_bytes(b"\0" * (free - 2 * MiB))  # room for less than the table
        node = cluster.nodes[0]
        server = [sys.executable, "-m", "ringkv.cli", "server", "--config", str(node.config_path)]
        out = subprocess.run(server, capture_output=True, text=True, timeout=60)
        assert out.returncode == 3, out.stderr
        assert "No space left on device" in out.stderr and "nothing was lost" in out.stderr
        assert list((node.data_dir / "engine" / "commitlog").iterdir())  # kept
        (root / "filler").unlink()
        cluster.start_node(0)
        cluster.wait_ready(60)
        async with AsyncClient(cluster.addresses(), timeout=5.0) as client:
            for k in keys:
                assert (await client.get(k))[0] == [VALUE]
    finally:
        cluster.close()
        subprocess.run(["umount", "-l", str(root)], check=False)


async def test_a_disk_filled_by_another_process_stalls_writes_and_loses_none(tmp_path):
    """The race D36 left open (D42): the disk fills between two readings of the free space
    (here the guard is off and a filler file leaves ~1 MiB), so the commit log's own write
    fails with ENOSPC. Before D42 the engine then refused every write with `Closed` until a
    restart. Now the records caught in the failed write wait in memory, unacknowledged
    (a client waiting on one sees Timeout), nothing is torn, and every new write is refused
    whole with StorageFull while the log waits; once the filler is gone the waiting records
    are logged and new writes are acknowledged, with no restart. After a kill -9 every
    acknowledged write is there, a timed-out one too (it was logged once there was room),
    and no refused one is."""
    root = _tmpfs(tmp_path / "n1", "16m")
    cluster = _one_node_unguarded(tmp_path)
    try:
        st = os.statvfs(root)
        (root / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - MiB))
        acked: list[bytes] = []
        waited: list[bytes] = []  # timed out while its record waited: logged later
        refused: list[bytes] = []  # StorageFull: nothing of it was written
        async with AsyncClient(cluster.addresses(), timeout=3.0) as client:
            for i in range(400):  # 4 MB of values into ~1 MiB: the disk fills
                key = b"k%04d" % i
                try:
                    await client.put(key, VALUE)
                except Timeout:
                    waited.append(key)
                    break
                except StorageFull as e:
                    assert "nothing was written" in str(e), e
                    refused.append(key)
                    break
                acked.append(key)
            assert (waited or refused) and len(acked) > 10, acked[-3:]
            eng = _engine(cluster, 0)
            assert eng["commitlog_stalled"] is True and eng["commitlog_stalls"] >= 1, eng
            log = cluster.nodes[0].log_path.read_text()
            assert "records wait in memory" in log and "commit log write failed" not in log
            assert (await client.get(acked[0]))[0] == [VALUE]  # reads go on
            for j in range(3):  # while the log waits, new writes are refused at once
                key = b"refused%d" % j
                t0 = time.monotonic()
                with pytest.raises(StorageFull, match="commit log is waiting for room"):
                    await client.put(key, VALUE)
                assert time.monotonic() - t0 < 2.0
                refused.append(key)
            assert _engine(cluster, 0)["writes_refused"] >= 3

            (root / "filler").unlink()  # the operator frees space
            deadline = time.monotonic() + 20
            while _engine(cluster, 0)["commitlog_stalled"]:
                assert time.monotonic() < deadline, f"the log stayed stalled: {_engine(cluster, 0)}"
                await asyncio.sleep(0.2)
            later = [b"later%03d" % j for j in range(50)]
            await asyncio.gather(*(client.put(k, VALUE) for k in later))  # no restart needed
            assert cluster.nodes[0].proc is not None and cluster.nodes[0].proc.poll() is None

        cluster.kill(0)  # kill -9: only what reached the commit log survives
        cluster.start_node(0)
        cluster.wait_ready(60)
        async with AsyncClient(cluster.addresses(), timeout=5.0) as client:
            for k in acked + waited + later:
                assert (await client.get(k))[0] == [VALUE], k
            for k in refused:
                assert (await client.get(k))[0] == [], k
    finally:
        cluster.close()
        subprocess.run(["umount", "-l", str(root)], check=False)
