"""A second node process started from a copy of a node's data directory (a cloned machine
or disk) has that node's id; two minters of one id's dots lose writes, since a write by
either can supersede the other's concurrent one (docs/decisions.md D38). The copy finds
the original through gossip, asks it, and stops with the reason; the original and the
cluster keep serving, and the cluster routes the id to the original again. Real node
processes on loopback."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import tomllib
import tomli_w

from ringkv.client import AsyncClient
from ringkv.testing import cluster as tc
from ringkv.testing.cluster import free_port


async def test_a_node_started_from_a_copied_data_directory_stops_and_the_original_serves(tmp_path):
    cluster = tc.start(3, tmp_path / "c", replication={"dc1": 3})
    try:
        async with AsyncClient(cluster.addresses(), timeout=5.0) as client:
            await client.put(b"before", b"v", w="ALL")
        n3 = cluster.nodes[2]
        copy = tmp_path / "copy"
        shutil.copytree(n3.data_dir, copy / "data")
        cfg = tomllib.loads(n3.config_path.read_text())
        cfg["node"].update(port=free_port(), http_port=free_port(), resp_port=free_port(),
                           data_dir=str(copy / "data"))
        (copy / "node.toml").write_text(tomli_w.dumps(cfg))
        out = subprocess.run([sys.executable, "-m", "ringkv.cli", "server", "--config",
                              str(copy / "node.toml")], capture_output=True, text=True, timeout=60)
        assert out.returncode != 0
        assert f"node id 'n3' is already in use by the node at {n3.address}" in out.stderr, out.stderr
        assert "copy of its data directory" in out.stderr

        # the cluster routes n3 to the original again: every node, since a write at ALL
        # coordinated by one that still routes n3 to the copy's port fails, and the
        # client's retry through another coordinator would leave two equal siblings
        deadline = time.monotonic() + 30
        for node in cluster.nodes[:2]:
            while True:
                ports = {n["node_id"]: n["port"] for n in node.http_json("/ring")["nodes"]}
                if ports["n3"] == n3.port:
                    break
                assert time.monotonic() < deadline, \
                    f"{node.node_id} still routes n3 to port {ports['n3']}"
                time.sleep(0.2)
        assert n3.proc is not None and n3.proc.poll() is None
        async with AsyncClient(cluster.addresses(), timeout=5.0) as client:
            await client.put(b"after", b"w", w="ALL")
            assert (await client.get(b"after", r="ALL"))[0] == [b"w"]
            assert (await client.get(b"before", r="ALL"))[0] == [b"v"]
    finally:
        cluster.close()
