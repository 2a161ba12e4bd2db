"""Measure how evenly random vnode tokens spread the token space over nodes.

For every (num_tokens, nodes) pair and several seeds, build a ring with random tokens
(ringkv.ring.generate_tokens) and measure each node's ownership relative to the ideal
share: rf/nodes of the token space for the replicated load (rf=3), 1/nodes for primary
ownership (rf=1). Prints markdown tables (the ones in docs/ring-balance.md) and a cost table.

    .venv/bin/python bench/ring_balance.py            # 10 seeds, about half a minute
    .venv/bin/python bench/ring_balance.py --seeds 3  # quicker
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ringkv.ring import NodeInfo, Ring, generate_tokens, token_for  # noqa: E402

TOKEN_COUNTS = (1, 4, 8, 16, 32, 64, 128, 256)
NODE_COUNTS = (3, 5, 10, 20)


def build(nodes: int, tokens: int, seed: int, rf: int) -> Ring:
    """A one-dc, one-rack ring of ``nodes`` nodes with random tokens from ``seed``."""
    rng = random.Random(seed)
    infos = [NodeInfo(f"n{i}", generate_tokens(rng, tokens)) for i in range(nodes)]
    return Ring(infos, {"dc1": rf})


def balance(nodes: int, tokens: int, seed: int, rf: int) -> tuple[float, float, float]:
    """(max, min, stddev) of ownership divided by the ideal share."""
    ring = build(nodes, tokens, seed, rf)
    shares = ring.ownership() if rf > 1 else ring.primary_ownership()
    ideal = min(rf, nodes) / nodes
    rel = [s / ideal for s in shares.values()]
    return max(rel), min(rel), statistics.pstdev(rel)


def table(rf: int, seeds: int) -> list[str]:
    """One markdown table: rows num_tokens, columns node counts; mean over seeds, worst max."""
    head = "| num_tokens | " + " | ".join(f"{n} nodes: max (worst) / min / sd" for n in NODE_COUNTS) + " |"
    lines = [head, "|" + " --- |" * (len(NODE_COUNTS) + 1)]
    for tokens in TOKEN_COUNTS:
        cells = []
        for nodes in NODE_COUNTS:
            runs = [balance(nodes, tokens, seed, rf) for seed in range(seeds)]
            mx = statistics.mean(r[0] for r in runs)
            worst = max(r[0] for r in runs)
            mn = statistics.mean(r[1] for r in runs)
            sd = statistics.mean(r[2] for r in runs)
            cells.append(f"{mx:.2f} ({worst:.2f}) / {mn:.2f} / {sd:.2f}")
        lines.append(f"| {tokens} | " + " | ".join(cells) + " |")
    return lines


def costs() -> list[str]:
    """What more tokens cost: ring build time, per-node ranges, replicas() latency (20 nodes, rf 3).

    Times are the best of three runs, since the machine is shared."""
    lines = ["| num_tokens | build ring + all preference lists (ms) | ranges per node (rf 3) | replicas() µs |",
             "| --- | --- | --- | --- |"]
    probes = [token_for(b"k%d" % i) for i in range(20000)]
    for tokens in TOKEN_COUNTS:
        build_ms = min(_timed(lambda: build(20, tokens, 0, 3).ownership()) for _ in range(3)) * 1e3
        ring = build(20, tokens, 0, 3)
        ring.ownership()  # computes and caches every range's preference list
        ranges = statistics.mean(len(ring.ranges_of(n.node_id)) for n in ring.nodes)
        lookup = min(_timed(lambda: [ring.replicas(t) for t in probes]) for _ in range(3))
        lines.append(f"| {tokens} | {build_ms:.1f} | {ranges:.0f} | {lookup / len(probes) * 1e6:.2f} |")
    return lines


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="rings per cell (default 10)")
    args = parser.parse_args()
    print(f"### Replicated ownership, rf=3 (ideal = 3/nodes), {args.seeds} seeds\n")
    print("\n".join(table(3, args.seeds)))
    print(f"\n### Primary ownership, rf=1 (ideal = 1/nodes), {args.seeds} seeds\n")
    print("\n".join(table(1, args.seeds)))
    print("\n### Cost of more tokens (20 nodes, rf=3, one seed)\n")
    print("\n".join(costs()))


if __name__ == "__main__":
    main()
