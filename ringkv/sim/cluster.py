"""A simulated cluster: k real :class:`ringkv.node.Node` objects on one virtual-time loop.

Each node gets the simulator's seams (DESIGN.md decision 1): a :class:`SimClock` (with a
seeded wall-clock skew), a seeded ``random.Random``, :class:`SimRpcServer` /
:class:`SimRpcClient` over the shared :class:`SimNetwork`, its :class:`NodeDisk` for the
engine and hint store, and an engine scheduler that runs group-commit fsyncs (after a
seeded disk latency), flushes and compactions as loop callbacks instead of threads.

``crash(i)`` is process death plus power loss: the incarnation dies (its pending callbacks
and tasks are discarded by the loop), its address stops answering and its disk keeps only
fsync'd bytes. ``restart(i)`` starts a fresh Node on the same data, as a new incarnation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from pathlib import Path
from typing import Any, Iterator

from ringkv import identity
from ringkv.config import (ClusterConfig, HintsConfig, NodeConfig, RepairConfig,
                           RingkvConfig, StreamingConfig)
from ringkv.node import Node
from ringkv.ring import generate_tokens
from ringkv.sim.disk import NodeDisk
from ringkv.sim.loop import Incarnation, SimClock, SimLoop, here
from ringkv.sim.network import SimNetwork

PORT = 7400


class DiskScheduler:
    """The engine's ``defer`` seam on the sim loop; syncs take a seeded disk latency."""

    def __init__(self, loop: SimLoop, rng: random.Random, latency: tuple[float, float]) -> None:
        self.loop, self.rng, self.latency = loop, rng, latency

    def defer(self, kind: str, fn: Any, delay: float = 0.0) -> None:
        if kind == "sync":
            delay += self.rng.uniform(*self.latency)
        self.loop.call_fast(delay, fn, here())  # no TimerHandle: deferred work is never cancelled


class SimNode:
    """One node slot: its config, disk and current incarnation."""

    def __init__(self, index: int, config: RingkvConfig, skew: float, seed: int) -> None:
        self.index = index
        self.name = config.node.node_id
        self.config = config
        self.disk = NodeDisk()
        self.skew = skew
        self.seed = seed
        self.node: Node | None = None
        self.inc: Incarnation | None = None
        self.lives = 0
        self.retired = False  # decommissioned (or being): out of the nemesis' reach

    @property
    def up(self) -> bool:
        return self.inc is not None and not self.inc.dead


class SimCluster:
    def __init__(self, loop: SimLoop, net: SimNetwork, root: str, n: int, rng: random.Random, *,
                 hints_mode: str = "sloppy", skew: float = 0.0, num_tokens: int = 8,
                 disk_latency: tuple[float, float] = (0.001, 0.010),
                 handover_s: float = StreamingConfig.handover_s) -> None:
        self.loop, self.net, self.rng = loop, net, rng
        self.handover_s = handover_s
        self.disk_latency = disk_latency
        self.root, self.hints_mode, self.skew, self.num_tokens = root, hints_mode, skew, num_tokens
        hosts = [f"n{i + 1}" for i in range(n)]
        self.seeds = tuple(f"{h}:{PORT}" for h in hosts)
        self.nodes: list[SimNode] = []
        self.addrs: list[tuple[str, int]] = []  # every node's address; grows on a join
        for host in hosts:
            s = self._slot(host, join=False)
            identity.write(Path(s.config.node.data_dir) / identity.FILE_NAME,
                           identity.Identity(host, generate_tokens(rng, num_tokens), "dc1", "rack1"))

    def _slot(self, host: str, join: bool) -> SimNode:
        base = RingkvConfig.sim()
        cfg = RingkvConfig(
            node=NodeConfig(node_id=host, host=host, port=PORT, resp_port=-1,
                            data_dir=os.path.join(self.root, host), seeds=self.seeds,
                            num_tokens=self.num_tokens),
            cluster=ClusterConfig(request_timeout_ms=1000),
            storage=base.storage, hints=HintsConfig(mode=self.hints_mode),
            repair=RepairConfig(interval_s=0.0),
            streaming=StreamingConfig(join=join, handover_s=self.handover_s))
        node_skew = self.rng.uniform(-self.skew, self.skew) if self.skew else 0.0
        s = SimNode(len(self.nodes), cfg, node_skew, self.rng.getrandbits(64))
        self.nodes.append(s)
        self.addrs.append((host, PORT))
        self.net.nodes.add(host)
        return s

    def join(self) -> SimNode:
        """Add a fresh node that bootstraps into the ring (``streaming.join``): it draws its
        own tokens (through :func:`seeded_identities`) and streams its ranges."""
        s = self._slot(f"n{len(self.nodes) + 1}", join=True)
        self.start(s)
        return s

    # -- lifecycle -------------------------------------------------------------------------
    async def start_all(self) -> None:
        await asyncio.gather(*(self.start(s) for s in self.nodes))

    def start(self, s: SimNode) -> asyncio.Task:
        """Start a new incarnation of ``s`` (in its own context); the start task."""
        s.lives += 1
        s.inc = Incarnation(f"{s.name}#{s.lives}")
        rng = random.Random(s.seed + s.lives)
        node = Node(s.config, clock=SimClock(self.loop, s.skew), rng=rng,
                    server_factory=self.net.server_factory(),
                    client_factory=self.net.client_factory(s.name), fs=s.disk.view(),
                    scheduler=DiskScheduler(self.loop, random.Random(rng.getrandbits(64)),
                                            self.disk_latency))
        s.node = node
        return self.loop.create_task(node.start(), context=s.inc.context)

    def crash(self, s: SimNode) -> None:
        """Kill the process and cut the power: unsynced bytes are lost."""
        if not s.up:
            return
        assert s.inc is not None
        s.inc.dead = True
        server = s.node.server if s.node is not None else None
        if server is not None and self.net.endpoints.get((s.name, PORT)) is server:
            del self.net.endpoints[(s.name, PORT)]
        s.disk.crash()
        s.node = None

    def restart(self, s: SimNode) -> asyncio.Task | None:
        return None if s.up else self.start(s)

    def live(self) -> list[SimNode]:
        return [s for s in self.nodes if s.up]

    def addresses(self) -> list[tuple[str, int]]:
        return list(self.addrs)


class _SeededSecrets:
    """Stands in for the ``secrets`` module where a fresh node draws its identity."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)

    def token_hex(self, nbytes: int = 32) -> str:
        return self._rng.getrandbits(8 * nbytes).to_bytes(nbytes, "big").hex()


@contextlib.contextmanager
def seeded_identities(rng: random.Random) -> Iterator[None]:
    """Within the block, new node identities (tokens) come from ``rng``, not ``secrets``."""
    saved = identity.secrets
    identity.secrets = _SeededSecrets(rng)  # type: ignore[assignment]
    try:
        yield
    finally:
        identity.secrets = saved


__all__ = ["SimCluster", "SimNode", "DiskScheduler", "PORT", "seeded_identities"]
