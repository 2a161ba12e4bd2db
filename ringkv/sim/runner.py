"""One simulated run: build the cluster, load it, inject faults, heal, check, report.

Phases (all in virtual time on one :class:`SimLoop`): start k nodes and let gossip settle;
run the workload for ``duration`` seconds while the nemesis injects faults; heal (network
healed, fault rates zeroed, crashed nodes restarted) and wait ``settle`` seconds for gossip
and hinted handoff; check convergence; run anti-entropy on every node; check convergence
again; read every key at ALL and judge the history (ringkv/sim/checker.py).

Everything random comes from ``random.Random(seed)`` through derived generators, and the
loop runs callbacks in a fixed order, so one seed gives one history: the result's
``digest`` hashes every delivered message, fault and op outcome in order.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from ringkv.chaos import checker as chaos_checker
from ringkv.sim import bugs
from ringkv.sim.checker import (divergent_keys, final_reads, judge_history, record_mints,
                                repair_all, surviving_dots)
from ringkv.sim.cluster import SimCluster, seeded_identities
from ringkv.sim.faults import KINDS, Nemesis
from ringkv.sim.loop import SimLoop
from ringkv.sim.network import SimNetwork
from ringkv.sim.trace import Trace
from ringkv.sim.workload import Workload, WorkloadSpec


@dataclass
class SimSpec:
    seed: int = 1
    nodes: int = 5
    duration: float = 60.0  # virtual seconds of workload (and faults)
    faults: frozenset[str] = frozenset(KINDS)
    mode: str = "sloppy"  # hints mode: sloppy | strict (strict: read-your-writes asserted)
    clients: int = 4
    rate: float = 40.0  # ops per virtual second
    settle: float = 30.0  # virtual seconds after healing, before the first convergence check
    bugs: tuple[str, ...] = ()
    keep_log: bool = False


@dataclass
class SimResult:
    spec: SimSpec
    digest: str = ""
    ok: bool = False
    acked_writes: int = 0
    lost_writes: int = 0
    report: Any = None
    diverged_after_hints: list = field(default_factory=list)
    hints_converged_checked: bool = False
    diverged_after_repair: list = field(default_factory=list)
    repair_ok: bool = True
    faults: list[str] = field(default_factory=list)
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    events: int = 0
    messages: int = 0
    failures: list[str] = field(default_factory=list)
    load_speed: float = 0.0  # sim seconds per wall second during the loaded, faulty phase
    load_sim: float = 0.0
    load_wall: float = 0.0
    trace_log: list[str] | None = None

    @property
    def speed(self) -> float:
        return self.sim_seconds / self.wall_seconds if self.wall_seconds else 0.0


def run(spec: SimSpec) -> SimResult:
    """Run one simulation to completion; never raises for a failed check."""
    root = tempfile.mkdtemp(prefix=f"ringkv-sim-{spec.seed}-", dir=_scratch_dir())
    loop = SimLoop()
    quiet = _quiet_logs()
    wall0 = time.perf_counter()
    try:
        with bugs.enabled(*spec.bugs), record_mints() as mints, \
                seeded_identities(random.Random(spec.seed ^ 0x5EED)):
            result = loop.run_until_complete(_main(loop, root, spec, mints))
    finally:
        loop.close()
        loop.discard_all()  # drop what still references the run's tasks ...
        del loop
        gc.collect()  # ... so they are destroyed now, while logs are quiet
        quiet()
        shutil.rmtree(root, ignore_errors=True)
    result.wall_seconds = time.perf_counter() - wall0
    return result


async def _main(loop: SimLoop, root: str, spec: SimSpec, mints: dict) -> SimResult:
    rng = random.Random(spec.seed)
    trace = Trace()
    if spec.keep_log:
        trace.log = []
    net = SimNetwork(loop, random.Random(rng.getrandbits(64)), trace)
    cluster = SimCluster(loop, net, root, spec.nodes, random.Random(rng.getrandbits(64)),
                         hints_mode=spec.mode, skew=2.0 if "skew" in spec.faults else 0.0)
    res = SimResult(spec, trace_log=trace.log)
    await cluster.start_all()
    await asyncio.sleep(5.0)  # gossip: every node learns every other
    nemesis = Nemesis(cluster, spec.faults, random.Random(rng.getrandbits(64)), trace)
    nemesis.background()
    wl = Workload(net, cluster.addrs,
                  WorkloadSpec(clients=spec.clients, rate=spec.rate), random.Random(rng.getrandbits(64)),
                  trace)
    outside = contextvars.Context()
    clients = wl.start(spec.duration)
    fault_task = loop.create_task(nemesis.run(spec.duration), context=outside)
    wall0, sim0 = time.perf_counter(), loop.time()
    await asyncio.gather(*clients)
    await fault_task
    res.load_sim, res.load_wall = loop.time() - sim0, time.perf_counter() - wall0
    res.load_speed = res.load_sim / max(res.load_wall, 1e-9)
    await _heal(cluster, nemesis)
    await asyncio.sleep(spec.settle)
    keys = chaos_checker.keys_of(wl.history)
    res.hints_converged_checked = nemesis.crashes == 0
    res.diverged_after_hints = divergent_keys(cluster, keys)
    res.repair_ok = await repair_all(cluster)
    await asyncio.sleep(2.0)
    res.diverged_after_repair = divergent_keys(cluster, keys)
    finals = await final_reads(cluster, keys, random.Random(rng.getrandbits(64)))
    survivors = surviving_dots(cluster, keys)
    report = judge_history(wl.history, finals, mints, survivors, ryw_enforced=spec.mode == "strict")
    _judge(res, report, nemesis)
    if res.acked_writes == 0 and spec.rate > 0:  # e.g. every put failing on a bug: vacuous
        res.failures.append("no write was acknowledged: the run checked nothing")
        res.ok = False
    res.sim_seconds = loop.time()
    trace.event(loop.time(), "result", res.acked_writes, res.lost_writes, res.ok)
    res.digest, res.events, res.messages = trace.digest(), trace.events, net.delivered
    return res


async def _heal(cluster: SimCluster, nemesis: Nemesis) -> None:
    cluster.net.heal()
    f = cluster.net.faults
    f.loss = f.duplicate = f.spike_chance = 0.0
    starts = [cluster.restart(s) for s in cluster.nodes if not s.up]
    nemesis.note("heal-all")
    await asyncio.gather(*(t for t in starts if t is not None))


def _judge(res: SimResult, report: Any, nemesis: Nemesis) -> None:
    res.report = report
    res.faults = nemesis.log
    res.acked_writes, res.lost_writes = report.acked_writes, report.lost_writes
    if report.lost:
        res.failures.append(f"{report.lost_writes} acknowledged writes lost")
    if report.unverified:
        res.failures.append(f"{len(report.unverified)} acknowledged writes unverifiable "
                            "(final read failed)")
    if report.ryw_enforced and report.ryw_missed:
        res.failures.append(f"{len(report.ryw_missed)} read-your-writes violations")
    if res.hints_converged_checked and res.diverged_after_hints:
        res.failures.append(f"{len(res.diverged_after_hints)} keys not converged by hinted "
                            "handoff (no crash happened)")
    if not res.repair_ok:
        res.failures.append("anti-entropy repair did not finish")
    if res.diverged_after_repair:
        res.failures.append(f"{len(res.diverged_after_repair)} keys not converged after repair")
    res.ok = not res.failures


def _scratch_dir() -> str | None:
    """Where the nodes' small real directories go (identity, topology progress; the engine
    and hints are on the simulated disk): a memory file system when there is one. Their
    writes fsync and no simulated crash touches them, so a disk's fsync latency (~2 ms a
    file here, most of a short seed's wall time) buys nothing."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def _quiet_logs() -> Any:
    """Silence node logging during a run (zombie incarnations log a lot); returns undo."""
    names = ("ringkv", "asyncio")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL + 1)

    def undo() -> None:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)
    return undo


__all__ = ["SimSpec", "SimResult", "run"]
