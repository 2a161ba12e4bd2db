"""Prometheus metrics of one node, on a registry of its own (never the global one).

The hot path only bumps plain integers in ``Node.counters``; this collector turns them,
the engine's stats and the membership view into metric families when ``/metrics`` is
scraped, so serving requests pays nothing for metrics.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeCollector:
    """Collects a node's counters and gauges at scrape time."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        ops = CounterMetricFamily("ringkv_operations", "Operations handled by this node",
                                  labels=["op"])
        for name, value in sorted(node.counters.items()):
            ops.add_metric([name], value)
        yield ops
        status = node.status()
        yield GaugeMetricFamily("ringkv_load_bytes", "Bytes on disk under the data directory",
                                value=status["load"])
        yield GaugeMetricFamily("ringkv_ownership_ratio",
                                "Fraction of the token space this node replicates",
                                value=status["ownership"])
        alive = GaugeMetricFamily("ringkv_node_alive", "1 if this node sees the peer alive",
                                  labels=["node_id"])
        for member in node.ring.nodes:
            alive.add_metric([member.node_id], 1.0 if node.alive(member.node_id) else 0.0)
        yield alive
        engine = GaugeMetricFamily("ringkv_engine", "Storage engine statistics", labels=["stat"])
        for name, value in sorted(status["engine"].items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                engine.add_metric([name], float(value))
        yield engine
        yield from _hint_metrics(status.get("hints") or {})
        trees = GaugeMetricFamily("ringkv_repair_trees",
                                  "Kept Merkle trees (docs/repair.md): gauges and counters",
                                  labels=["stat"])
        for name, value in sorted((status.get("repair_trees") or {}).items()):
            if isinstance(value, int):
                trees.add_metric([name], float(value))
        yield trees


def _hint_metrics(hints: dict) -> Iterator[Metric]:
    """Hinted handoff (docs/hints.md): counters, and pending hints per target node."""
    counters = CounterMetricFamily("ringkv_hints", "Hinted handoff events", labels=["event"])
    for name in ("hints_stored", "hints_replayed", "hints_dropped_overflow",
                 "hints_dropped_expired", "hints_corrupt"):
        counters.add_metric([name[len("hints_"):]], float(hints.get(name, 0)))
    yield counters
    pending = GaugeMetricFamily("ringkv_hints_pending", "Hints held for a target node",
                                labels=["target"])
    for target, count in sorted((hints.get("pending") or {}).items()):
        pending.add_metric([target], float(count))
    yield pending


def registry_for(node: Any) -> CollectorRegistry:
    """A fresh registry holding only this node's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))  # type: ignore[arg-type]
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)


__all__ = ["NodeCollector", "registry_for", "render", "CONTENT_TYPE"]
