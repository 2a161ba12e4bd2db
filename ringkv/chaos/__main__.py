"""``python -m ringkv.chaos``: one seeded chaos run; the last output line is its JSON result.

Exit status 0 when every check passed, 1 when one failed, 2 when the run could not be
made (not root, a node would not start, ...)."""

from __future__ import annotations

import argparse
import json
import random
import sys

from ringkv.chaos import nemesis
from ringkv.chaos.runner import RunConfig, result_line, run


def parse(argv: list[str] | None = None) -> RunConfig:
    p = argparse.ArgumentParser(prog="python -m ringkv.chaos", description=__doc__)
    p.add_argument("--seed", type=int, default=None, help="nemesis + workload seed (default: random, printed)")
    p.add_argument("--duration", type=float, default=40.0, help="seconds of workload under faults")
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--rate", type=float, default=60.0, help="target workload ops/s (all clients)")
    p.add_argument("--mode", choices=["strict", "sloppy"], default="strict", help="[hints] mode")
    p.add_argument("--long", action="store_true",
                   help="also kill+partition faults, and join/decommission when available")
    p.add_argument("--kinds", default=None,
                   help="comma-separated fault kinds (kill,pause,partition,oneway,kill+partition)")
    p.add_argument("--shared-keys", type=int, default=8, help="keys per shared class (contention)")
    p.add_argument("--mix", default="0.35,0.25,0.40", help="shares of unique,blind,rmw writes")
    p.add_argument("--hold", default="2,5", help="min,max seconds a fault lasts")
    p.add_argument("--gap", default="1,3", help="min,max seconds between faults")
    p.add_argument("--converge-timeout", type=float, default=60.0)
    p.add_argument("--read-repair-pass", choices=["auto", "always", "never"], default="auto")
    p.add_argument("--repair", choices=["auto", "never"], default="auto",
                   help="run `ringkv repair` on every node after healing (auto: if the CLI has it)")
    p.add_argument("--dir", default=None, help="run directory (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the run directory even on success")
    a = p.parse_args(argv)
    kinds = nemesis.BASIC_KINDS + (("kill+partition",) if a.long else ())
    if a.kinds:
        kinds = tuple(k.strip() for k in a.kinds.split(",") if k.strip())
    return RunConfig(seed=a.seed if a.seed is not None else random.randrange(1, 1 << 31),
                     duration_s=a.duration, clients=a.clients, rate=a.rate, hints_mode=a.mode,
                     kinds=kinds, membership_changes=a.long,
                     converge_timeout_s=a.converge_timeout, read_repair_pass=a.read_repair_pass,
                     base_dir=a.dir, keep=a.keep, repair=a.repair, shared_keys=a.shared_keys,
                     hold=_pair(a.hold), gap=_pair(a.gap),
                     mix=tuple(float(x) for x in a.mix.split(",")))  # type: ignore[arg-type]


def _pair(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    return float(lo), float(hi or lo)


def main(argv: list[str] | None = None) -> int:
    cfg = parse(argv)
    try:
        result = run(cfg, log=lambda line: print(line, flush=True))
    except Exception as exc:  # noqa: BLE001 - reported as the JSON line
        print(json.dumps({"ok": False, "seed": cfg.seed, "error": f"{type(exc).__name__}: {exc}",
                          "acked_writes": 0, "lost_writes": None, "faults": 0,
                          "converge_s": None}), flush=True)
        return 2
    print(result_line(result), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
