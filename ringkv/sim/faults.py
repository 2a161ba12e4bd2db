"""The simulator's nemesis: seeded faults injected while the workload runs.

Fault kinds (``--faults``, comma-separated, or ``all`` / ``none``):

- ``loss``, ``dup``, ``delay``: background message loss (1-5%), duplication (1-5%) and
  delay spikes up to 300 ms (which reorder messages), drawn once per run;
- ``partition``: a random symmetric split of the nodes, healed after 1-10 s;
- ``oneway``: a one-way partition (a random set of nodes cannot reach the others, whose
  messages still arrive), healed after 1-10 s;
- ``crash``: one node crashes (losing what it had not fsync'd) and restarts 1-10 s later;
- ``power``: a correlated power loss: every node crashes at once and restarts 0.5-3 s later;
- ``skew``: node wall clocks differ by up to ±2 s (version timestamps, gossip generations);
- ``join`` / ``decommission``: at most one membership change per run (never two range
  movements at once, as Cassandra operators are told; see docs/simulation.md for what two
  overlapping ones do):
- ``join``: a fresh node bootstraps
  into the ring (``streaming.join``: joining, streams its ranges, then normal) and the
  clients start using it; it may crash and resume like any other node;
- ``decommission``: one node is asked
  (``decommission`` RPC, ringkv/topology.py) to stream its ranges to their new owners and
  leave the ring; it keeps running, retired (the nemesis no longer crashes it). Only when
  the node code has the topology handlers (feature-detected).

Every injected fault goes into the trace digest and the run's fault log.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from ringkv.errors import RingkvError
from ringkv.sim.cluster import PORT, SimCluster
from ringkv.sim.network import SimRpcClient
from ringkv.sim.trace import Trace

KINDS = ("loss", "dup", "delay", "partition", "oneway", "crash", "power", "skew", "join",
         "decommission")


def parse_faults(text: str) -> frozenset[str]:
    text = (text or "").strip()
    if text in ("", "none"):
        return frozenset()
    if text == "all":
        return frozenset(KINDS)
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    bad = sorted(kinds - set(KINDS))
    if bad:
        raise ValueError(f"unknown fault kind {bad[0]!r}; known: {', '.join(KINDS)}, all, none")
    return kinds


class Nemesis:
    def __init__(self, cluster: SimCluster, faults: frozenset[str], rng: random.Random,
                 trace: Trace) -> None:
        self.cluster, self.faults, self.rng, self.trace = cluster, faults, rng, trace
        self.log: list[str] = []
        self.crashes = 0
        self.end = 0.0

    def note(self, *parts: Any) -> None:
        t = self.cluster.loop.time()
        self.trace.event(t, "fault", *parts)
        self.log.append(f"{t:9.3f}s " + " ".join(map(str, parts)))

    def background(self) -> None:
        """Set the per-message fault rates for the run."""
        f, rng = self.cluster.net.faults, self.rng
        if "loss" in self.faults:
            f.loss = rng.uniform(0.01, 0.05)
        if "dup" in self.faults:
            f.duplicate = rng.uniform(0.01, 0.05)
        if "delay" in self.faults:
            f.spike_chance, f.spike_max = rng.uniform(0.005, 0.03), 0.3
            f.delay_jitter = rng.uniform(0.0005, 0.003)
        self.note("rates", f"loss={f.loss:.3f}", f"dup={f.duplicate:.3f}",
                  f"spike={f.spike_chance:.3f}")

    async def run(self, duration: float) -> None:
        """Inject episodic faults until ``duration`` virtual seconds have passed."""
        loop = self.cluster.loop
        self.end = loop.time() + duration
        episodic = [k for k in ("partition", "oneway", "crash", "power", "join", "decommission")
                    if k in self.faults]
        self.moved = False  # one membership change per run: like an operator, never two at once
        if not episodic:
            return
        while True:
            await asyncio.sleep(self.rng.uniform(1.0, 6.0))
            if loop.time() >= self.end:
                return
            kind = episodic[self.rng.randrange(len(episodic))]
            if kind == "power" and len(episodic) > 1 and self.rng.random() < 0.6:
                continue  # power loss is the rarest fault
            await getattr(self, "_" + kind)()

    async def _join(self) -> None:
        cluster = self.cluster
        if self.moved or len(cluster.live()) < len(cluster.nodes):
            return
        self.moved = True
        s = cluster.join()
        self.note("join", s.name)

    async def _decommission(self) -> None:
        cluster = self.cluster
        if self.moved or len(cluster.nodes) <= 3:
            return
        live = [s for s in cluster.live() if s.node is not None
                and "decommission" in getattr(s.node, "_handlers", {})]
        if len(live) < len(cluster.nodes):
            return
        victim = live[self.rng.randrange(len(live))]
        victim.retired = self.moved = True
        self.note("decommission", victim.name)
        client = SimRpcClient(cluster.net, "operator")
        try:
            await client.call(victim.name, PORT, "decommission", {}, 5.0)
        except RingkvError as exc:
            self.note("decommission-refused", victim.name, type(exc).__name__)

    async def _partition(self) -> None:
        names = [s.name for s in self.cluster.nodes]
        self.rng.shuffle(names)
        cut = self.rng.randrange(1, len(names))
        side, other = sorted(names[:cut]), sorted(names[cut:])
        self.cluster.net.partition(side, other)
        self.note("partition", ",".join(side), "|", ",".join(other))
        await self._heal_after()

    async def _oneway(self) -> None:
        names = [s.name for s in self.cluster.nodes]
        self.rng.shuffle(names)
        cut = self.rng.randrange(1, len(names))
        side, other = sorted(names[:cut]), sorted(names[cut:])
        self.cluster.net.partition(side, other, one_way=True)
        self.note("oneway", ",".join(side), "->x", ",".join(other))
        await self._heal_after()

    async def _heal_after(self) -> None:
        await asyncio.sleep(self.rng.uniform(1.0, 10.0))
        self.cluster.net.heal()
        self.note("heal")

    async def _crash(self) -> None:
        live = [s for s in self.cluster.live() if not s.retired]
        if len(live) < len(self.cluster.nodes):
            return
        victim = live[self.rng.randrange(len(live))]
        self.cluster.crash(victim)
        self.crashes += 1
        self.note("crash", victim.name)
        await asyncio.sleep(self.rng.uniform(1.0, 10.0))
        self.cluster.restart(victim)
        self.note("restart", victim.name)

    async def _power(self) -> None:
        for s in self.cluster.nodes:
            if not s.retired:
                self.cluster.crash(s)
        self.crashes += 1
        self.note("power-loss", "all")
        await asyncio.sleep(self.rng.uniform(0.5, 3.0))
        for s in self.cluster.nodes:
            self.cluster.restart(s)
        self.note("power-restored", "all")


__all__ = ["Nemesis", "KINDS", "parse_faults"]
