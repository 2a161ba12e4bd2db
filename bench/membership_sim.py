#!/usr/bin/env python3
"""Failure-detector figures in simulated time: convergence, detection time, false positives.

Runs ringkv.membership on ringkv.testing.sim_router (virtual time, seeded delay 1-20 ms,
seeded message loss), with the default MembershipConfig (gossip every 1 s, fanout 3,
suspect after 5 s, 3 indirect probes, 2 nodes must agree). For each (cluster size, loss):

  converge   simulated seconds until every node lists every node as live, starting from
             nodes that know only the first node's address (seed); a second table gives
             it in gossip rounds for 8, 32 and 128 nodes
  fp         false positives: a *running* node declared down by some node, counted over
             a quiet window of --window simulated seconds after convergence; reported as
             events per node-hour of observation (each observer watching each peer) and
             the number of seeds with any false positive
  suspect    suspicions (a peer stale for 5 s, before agreement) per node-hour
  KiB/s      bytes sent per node per simulated second (msgpack), with --tokens tokens
             per node (64, the default num_tokens): the whole list goes in every gossip
  detect     after one node is killed: time until each running node declares it down
             (median and max over all observers and seeds), and whether all did within
             the run

Loss modes: "all links" drops that fraction of every message on every link; "one link"
cuts or degrades only the link between n01 and n02 (the bad-link case: indirect probes
and relayed heartbeats must keep them from declaring each other down).

Usage: bench/membership_sim.py [--quick] [--seeds K] [--window S]  (prints a markdown
table and one JSON line per row)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ringkv.membership import DOWN, StateChanged  # noqa: E402
from ringkv.testing.sim_router import membership_cluster  # noqa: E402

DETECT_LIMIT_S = 120.0


def run_one(n: int, loss: float, mode: str, seed: int, window: float, tokens: int) -> dict:
    """One cluster, one seed: converge, quiet window, kill n{n-1}, measure detection."""
    router, nodes = membership_cluster(n, seed=seed, loss=loss if mode == "all" else 0.0,
                                       num_tokens=tokens)
    if mode == "one-cut":
        router.block("n01", "n02")
    elif mode == "one-lossy":
        router.set_link_loss("n01", "n02", loss)
    start = router.now
    router.run_for(120, lambda: all(len(m.live_members()) == n for m in nodes.values()))
    converge = router.now - start
    quiet_start = router.now
    router.run_for(window)
    false_downs = sum(1 for t, e in router.events
                      if isinstance(e, StateChanged) and e.new == DOWN and t >= quiet_start)
    suspicions = sum(m.counters["suspected"] for m in nodes.values())
    victim = f"n{n - 1:02d}"
    router.stop(victim)
    killed_at = router.now
    detected: dict[str, float] = {}
    # StateChanged does not name the observer, so poll each observer's view (every 0.25 s).
    observers = [i for i in sorted(nodes) if i != victim]
    step = 0.25
    while router.now - killed_at < DETECT_LIMIT_S and len(detected) < len(observers):
        router.run_for(step)
        for i in observers:
            if i not in detected and nodes[i].state_of(victim) == DOWN:
                detected[i] = router.now - killed_at
    pairs_hours = n * (n - 1) * window / 3600.0
    return {"converge": converge, "false_downs": false_downs, "suspicions": suspicions,
            "pair_hours": pairs_hours, "detect": sorted(detected.values()),
            "all_detected": len(detected) == len(observers), "bytes": router.stats.bytes,
            "sent": router.stats.sent, "sim_s": router.now - start}


def summarize(n: int, loss: float, mode: str, runs: list[dict]) -> dict:
    detect = [d for r in runs for d in r["detect"]]
    pair_hours = sum(r["pair_hours"] for r in runs)
    return {
        "n": n, "loss": loss, "mode": mode, "seeds": len(runs),
        "converge_s_median": round(statistics.median(r["converge"] for r in runs), 2),
        "converge_s_max": round(max(r["converge"] for r in runs), 2),
        "detect_s_median": round(statistics.median(detect), 2) if detect else None,
        "detect_s_max": round(max(detect), 2) if detect else None,
        "all_detected": all(r["all_detected"] for r in runs),
        "false_downs": sum(r["false_downs"] for r in runs),
        "false_downs_per_pair_hour": round(sum(r["false_downs"] for r in runs) / pair_hours, 4),
        "seeds_with_false_down": sum(1 for r in runs if r["false_downs"]),
        "suspicions_per_pair_hour": round(sum(r["suspicions"] for r in runs) / pair_hours, 3),
        "kib_per_node_s": round(sum(r["bytes"] for r in runs)
                                / sum(r["sim_s"] * n for r in runs) / 1024, 2),
    }


def converge_row(n: int, loss: float, seeds: int, tokens: int) -> dict:
    """Gossip rounds until every node lists every node as live, from a single seed."""
    times = []
    for seed in range(seeds):
        router, nodes = membership_cluster(n, seed=seed, loss=loss, num_tokens=tokens)
        start = router.now
        router.run_for(120, lambda: all(len(m.live_members()) == n for m in nodes.values()))
        times.append((router.now - start) / router.interval)
    return {"n": n, "loss": loss, "seeds": seeds, "rounds_median": round(statistics.median(times), 2),
            "rounds_max": round(max(times), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer seeds, shorter window")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--window", type=float, default=600.0, help="quiet window, sim seconds")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per node (sets message size)")
    args = ap.parse_args()
    seeds, window = (3, 120.0) if args.quick else (args.seeds, args.window)
    cases = [(n, loss, "all") for n in (5, 20) for loss in (0.0, 0.1, 0.3)]
    cases += [(20, 0.5, "all"), (5, 0.3, "one-lossy"), (5, 1.0, "one-cut")]
    rows = []
    for n, loss, mode in cases:
        runs = [run_one(n, loss, mode, seed, window, args.tokens) for seed in range(seeds)]
        row = summarize(n, loss, mode, runs)
        rows.append(row)
        print(json.dumps(row), flush=True)
    conv = [converge_row(n, loss, max(2, seeds // 2), args.tokens)
            for n in (8, 32, 128) for loss in (0.0, 0.3)]
    for row in conv:
        print(json.dumps(row), flush=True)
    print()
    print("| nodes | loss | links | converge s (median/max) | detect s (median/max) | all detected "
          "| false downs (per pair-hour) | suspicions per pair-hour | KiB/s per node |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        links = {"all": "all", "one-lossy": "n01-n02 only", "one-cut": "n01-n02 cut"}[r["mode"]]
        print(f"| {r['n']} | {r['loss']:.0%} | {links} | {r['converge_s_median']} / {r['converge_s_max']} "
              f"| {r['detect_s_median']} / {r['detect_s_max']} | {'yes' if r['all_detected'] else 'NO'} "
              f"| {r['false_downs']} ({r['false_downs_per_pair_hour']}) "
              f"| {r['suspicions_per_pair_hour']} | {r['kib_per_node_s']} |")
    print()
    print("| nodes | loss | rounds to converge (median/max) | log4(n) |")
    print("| --- | --- | --- | --- |")
    for r in conv:
        print(f"| {r['n']} | {r['loss']:.0%} | {r['rounds_median']} / {r['rounds_max']} "
              f"| {math.log(r['n'], 4):.1f} |")


if __name__ == "__main__":
    main()
