"""PNG charts of a benchmark result (matplotlib, Agg backend: no display needed).

``write_plots(result, directory)`` writes ``throughput.png`` (operations per second, each
second of the load and run phases) and ``latency.png`` (latency at each percentile, per
operation type, on a log "nines" axis as HdrHistogram plots do); it returns their paths.
"""

from __future__ import annotations

import math
import os
from typing import Any

PERCENTILES = ("p50", "p95", "p99", "p99.9")


def write_plots(result: dict[str, Any], directory: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    title = f"ringkv bench: workload {result['options']['workload']}"
    paths = [os.path.join(directory, "throughput.png"), os.path.join(directory, "latency.png")]

    fig, ax = plt.subplots(figsize=(8, 4))
    offset = 0
    for phase in ("load", "run"):
        series = result.get(phase, {}).get("timeline_ops_per_s", [])
        if series:
            ax.plot(range(offset, offset + len(series)), series, marker=".", label=phase)
            offset += len(series)
    ax.set(xlabel="second", ylabel="operations / s", title=f"{title}: throughput")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    xs = [1 / (1 - float(p[1:]) / 100) for p in PERCENTILES]
    for phase in ("load", "run"):
        for op, s in result.get(phase, {}).get("latency_ms", {}).items():
            ax.plot(xs, [s[p] for p in PERCENTILES], marker="o", label=f"{phase} {op}")
    ax.set_xscale("log")
    ax.set_xticks(xs, list(PERCENTILES))
    ax.set_yscale("log" if _spread(result) else "linear")
    ax.set(xlabel="percentile", ylabel="latency (ms)", title=f"{title}: latency distribution")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths


def _spread(result: dict[str, Any]) -> bool:
    """True when latencies span more than a factor of 20 (a log axis reads better)."""
    values = [s[p] for ph in ("load", "run") for s in result.get(ph, {}).get("latency_ms", {}).values()
              for p in PERCENTILES if s[p] > 0]
    return bool(values) and math.log10(max(values) / min(values)) > 1.3


__all__ = ["write_plots"]
