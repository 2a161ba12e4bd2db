"""``ringkv simulate``: run seeds in the simulator, print a summary and one JSON line.

The run is reproducible only with a fixed ``PYTHONHASHSEED`` (the iteration order of sets
of strings would otherwise differ between processes), so :func:`run_simulate` re-executes
the command with ``PYTHONHASHSEED=0`` when it is not already set that way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sys
from typing import Any, Callable

from ringkv.sim.faults import parse_faults

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``10m``, ``1h``, ``500ms``."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"bad duration {text!r}: use e.g. 90, 90s, 10m, 1h")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


def ensure_hash_seed() -> None:
    """Re-exec this command with PYTHONHASHSEED=0 unless it is already so."""
    if os.environ.get("PYTHONHASHSEED") == "0":
        return
    env = dict(os.environ, PYTHONHASHSEED="0")
    argv0 = sys.argv[0]
    if argv0.endswith(".py") or not os.path.exists(argv0):
        args = [sys.executable, "-m", "ringkv.cli", *sys.argv[1:]]
    else:
        args = [sys.executable, argv0, *sys.argv[1:]]
    sys.stdout.flush()
    os.execve(sys.executable, args, env)


def replay_command(seed: int, nodes: int, duration: str, faults: str, mode: str, rate: float,
                   clients: int, bugs: tuple[str, ...]) -> str:
    parts = ["PYTHONHASHSEED=0", "ringkv", "simulate", "--seed", str(seed), "--nodes", str(nodes),
             "--duration", duration, "--faults", faults, "--mode", mode, "--rate", f"{rate:g}",
             "--clients", str(clients)]
    for b in bugs:
        parts += ["--bug", b]
    return " ".join(shlex.quote(p) for p in parts)


def run_simulate(seed: int, seeds: int, nodes: int, duration: str, faults: str, mode: str,
                 rate: float, clients: int, bugs: tuple[str, ...], trace: bool,
                 say: Callable[[str], None] = print) -> int:
    """Run ``seeds`` seeds from ``seed``; exit code 0 if every run passed, 1 if not."""
    ensure_hash_seed()
    from ringkv.sim.runner import SimSpec, run

    secs = parse_duration(duration)
    kinds = parse_faults(faults)
    results = []
    for s in range(seed, seed + seeds):
        spec = SimSpec(seed=s, nodes=nodes, duration=secs, faults=kinds, mode=mode, clients=clients,
                       rate=rate, bugs=tuple(bugs), keep_log=trace)
        res = run(spec)
        results.append(res)
        _summary(res, say, trace)
        if not res.ok:
            say("  reproduce: " + replay_command(s, nodes, duration, faults, mode, rate, clients,
                                                 tuple(bugs)))
    say(json.dumps(_json(results, nodes, secs, faults, mode, bugs), sort_keys=True))
    return 0 if all(r.ok for r in results) else 1


def _summary(res: Any, say: Callable[[str], None], trace: bool) -> None:
    rep = res.report.summary() if res.report is not None else {}
    if trace and res.trace_log:
        for line in res.trace_log:
            say("  " + line)
    say(f"seed {res.spec.seed}: {'ok' if res.ok else 'FAILED'}  digest {res.digest}  "
        f"{res.sim_seconds:.1f} sim-s in {res.wall_seconds:.2f} wall-s ({res.speed:.0f}x, "
        f"{res.load_speed:.0f}x under load)  "
        f"{res.messages} messages")
    say(f"  writes {rep.get('writes', 0)} (acked {res.acked_writes}, lost {res.lost_writes}, "
        f"unknown outcome {rep.get('unacked_writes', 0)}), read-your-writes checks "
        f"{rep.get('ryw_checks', 0)} (missed {rep.get('ryw_missed', 0)}"
        f"{', enforced' if rep.get('ryw_enforced') else ''}), faults {len(res.faults)}")
    for line in res.failures:
        say(f"  FAIL {line}")
    if not res.ok:
        for line in res.faults:
            say(f"  fault {line}")
        for w in (res.report.lost if res.report is not None else [])[:5]:
            say(f"  lost {w['key']}={w['value']} acked at {w['t1']:.3f}s; final {w.get('final')}")
        for d in (res.diverged_after_repair or res.diverged_after_hints)[:3]:
            say(f"  diverged {d['key']}: {d['replicas']}")


def _json(results: list, nodes: int, secs: float, faults: str, mode: str, bugs: tuple) -> dict:
    wall = sum(r.wall_seconds for r in results)
    sim = sum(r.sim_seconds for r in results)
    digest = results[0].digest if len(results) == 1 else hashlib.blake2b(
        "".join(r.digest for r in results).encode(), digest_size=16).hexdigest()
    return {"seed": results[0].spec.seed, "seeds": len(results), "digest": digest,
            "acked_writes": sum(r.acked_writes for r in results),
            "lost_writes": sum(r.lost_writes for r in results),
            "sim_seconds_per_wall_second": round(sim / wall, 1) if wall else 0.0,
            "load_sim_seconds_per_wall_second": round(
                sum(r.load_sim for r in results) / max(sum(r.load_wall for r in results), 1e-9), 1),
            "sim_seconds": round(sim, 3), "wall_seconds": round(wall, 3),
            "ok": all(r.ok for r in results),
            "failed_seeds": [r.spec.seed for r in results if not r.ok],
            "nodes": nodes, "duration_s": secs, "faults": faults, "mode": mode, "bugs": list(bugs),
            "messages": sum(r.messages for r in results)}


__all__ = ["run_simulate", "parse_duration", "replay_command", "ensure_hash_seed"]
