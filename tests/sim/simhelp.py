"""Shared helpers of the simulator tests: run a seed, explain a failure with its replay."""

from __future__ import annotations

from ringkv.sim.cli import replay_command
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
