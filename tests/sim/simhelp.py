"""Shared helpers of the simulator tests: run a seed, explain a failure with its replay,
and drive a scenario against a whole simulated cluster of production nodes."""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from typing import Any, Awaitable, Callable

from ringkv.sim.cli import replay_command
from ringkv.sim.cluster import SimCluster, seeded_identities
from ringkv.sim.loop import SimLoop
from ringkv.sim.network import SimNetwork
from ringkv.sim.trace import Trace
from ringkv.sim.faults import parse_faults
from ringkv.sim.runner import SimResult, SimSpec, run


def sim(seed: int, *, duration: float = 20.0, faults: str = "all", mode: str = "sloppy",
        rate: float = 40.0, bugs: tuple[str, ...] = (), nodes: int = 5, clients: int = 4) -> SimResult:
    return run(SimSpec(seed=seed, nodes=nodes, duration=duration, faults=parse_faults(faults),
                       mode=mode, rate=rate, clients=clients, bugs=bugs))


def replay(res: SimResult, faults: str) -> str:
    s = res.spec
    return replay_command(s.seed, s.nodes, f"{s.duration:g}s", faults, s.mode, s.rate, s.clients,
                          s.bugs)


def explain(res: SimResult, faults: str) -> str:
    lines = [f"seed {res.spec.seed} failed: {'; '.join(res.failures)}",
             f"  replay: {replay(res, faults)}"]
    lines += [f"  fault {f}" for f in res.faults[:20]]
    return "\n".join(lines)


def run_cluster(scenario: Callable[[SimCluster, Any], Awaitable[None]], *, net_seed: int,
                cluster_seed: int, identity_seed: int | None = None, nodes: int = 5,
                network: Callable[..., Any] = SimNetwork, prefix: str = "ringkv-sim-",
                settle: float = 5.0) -> None:
    """Start ``nodes`` production nodes on a virtual-time loop and network (``network(loop,
    rng, trace)``) in a temporary directory, let them gossip ``settle`` virtual seconds,
    then await ``scenario(cluster, net)``; the loop and the directory always go.
    ``identity_seed`` also fixes the nodes' identities (tokens) with ``seeded_identities``."""
    loop = SimLoop()
    root = tempfile.mkdtemp(prefix=prefix)

    async def main() -> None:
        net = network(loop, random.Random(net_seed), Trace())
        cluster = SimCluster(loop, net, root, nodes, random.Random(cluster_seed))
        await cluster.start_all()
        await asyncio.sleep(settle)
        await scenario(cluster, net)

    try:
        if identity_seed is None:
            loop.run_until_complete(main())
        else:
            with seeded_identities(random.Random(identity_seed)):
                loop.run_until_complete(main())
    finally:
        loop.close()
        shutil.rmtree(root, ignore_errors=True)
