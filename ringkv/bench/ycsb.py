"""``ringkv bench``: YCSB core workloads A-F against a ringkv cluster.

Two phases, as in YCSB: *load* inserts ``records`` records, then *run* performs
``operations`` operations of the chosen workload from ``concurrency`` coroutines (each
with one request in flight), stopping early at ``duration`` seconds if given. Latencies
go into HDR histograms (1 us .. 60 s, 3 significant digits) per operation type; the
result dict holds p50/p95/p99/p99.9 and the throughput of every second.

Workloads (``ringkv.bench.generators.WORKLOADS``): A 50/50 read/update, B 95/5,
C read-only, D read-latest with 5% inserts, F read-modify-write (get, then put with the
context the get returned, so it supersedes what it read). **E is emulated**: ringkv has
no ordered scan across the cluster (records are spread by token), so a "scan" of length L
(uniform 1..100) is L concurrent gets of the records numbered after the chosen one; its
latency is that of the slowest get, and it counts as one operation.

Updates, inserts and loads are puts *without* a context (they supersede what the
coordinator holds); F's puts carry the context of their read.

Python API: ``run_bench(BenchOptions(...)) -> dict`` (also accepts a plain dict of
options). CLI: :data:`bench_command`, added to the ``ringkv`` group as ``ringkv bench``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import click

from ringkv.bench.generators import MAX_SCAN_LENGTH, WORKLOADS, chooser, record_key
from ringkv.bench.targets import Target, open_target

OPS = ("read", "update", "insert", "scan", "rmw")


@dataclass
class BenchOptions:
    seeds: tuple[str, ...] = ("127.0.0.1:7400",)  # nodes to contact (host:port)
    workload: str = "A"  # A B C D E F
    records: int = 10_000  # records inserted by the load phase
    operations: int = 100_000  # operations of the run phase
    concurrency: int = 50  # coroutines, one request in flight each
    value_size: int = 100  # bytes per value
    distribution: str | None = None  # uniform | zipfian | latest; None = the workload's own
    read_level: str | None = None  # consistency level of gets (None = the node's default)
    write_level: str | None = None  # consistency level of puts
    duration: float | None = None  # stop the run phase after this many seconds
    load: bool = True  # run the load phase first
    plot_dir: str | None = None  # write throughput.png and latency.png here
    progress: bool = True  # show a progress bar
    target: str = "client"  # client (ringkv AsyncClient) | resp (seeds[0] is a RESP server) | memory
    seed: int = 1  # random seed of key choice and operation mix


@dataclass
class Recorder:
    """Latency histograms per operation type, errors and a per-second throughput timeline."""

    started: float = field(default_factory=time.perf_counter)
    hists: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    timeline: list[int] = field(default_factory=list)
    done: int = 0

    def ok(self, op: str, t0: float, t1: float) -> None:
        hist = self.hists.get(op)
        if hist is None:
            from hdrh.histogram import HdrHistogram

            hist = self.hists[op] = HdrHistogram(1, 60_000_000, 3)
        hist.record_value(max(1, int((t1 - t0) * 1e6)))
        self._tick(t1)

    def failed(self, exc: BaseException, t1: float) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1
        self._tick(t1)

    def _tick(self, t1: float) -> None:
        self.done += 1
        second = int(t1 - self.started)
        while len(self.timeline) <= second:
            self.timeline.append(0)
        self.timeline[second] += 1

    def summary(self, elapsed: float) -> dict[str, Any]:
        per_op = {op: _hist_summary(h) for op, h in sorted(self.hists.items())}
        ok = sum(v["count"] for v in per_op.values())
        return {"operations": self.done, "ok": ok, "errors": sum(self.errors.values()),
                "error_kinds": dict(self.errors), "seconds": round(elapsed, 3),
                "ops_per_s": round(self.done / elapsed, 1) if elapsed else 0.0,
                "latency_ms": per_op, "timeline_ops_per_s": list(self.timeline)}


def _hist_summary(h: Any) -> dict[str, float]:
    q = h.get_value_at_percentile
    return {"count": h.get_total_count(), "p50": q(50) / 1000, "p95": q(95) / 1000,
            "p99": q(99) / 1000, "p99.9": q(99.9) / 1000, "max": h.get_max_value() / 1000,
            "mean": round(h.get_mean_value() / 1000, 3)}


class Runner:
    """Runs one workload against one target. Everything random comes from ``seed``."""

    def __init__(self, opts: BenchOptions, target: Target) -> None:
        if opts.workload.upper() not in WORKLOADS:
            raise ValueError(f"unknown workload {opts.workload!r} (A-F)")
        self.opts, self.target = opts, target
        self.workload = WORKLOADS[opts.workload.upper()]
        self.rng = random.Random(opts.seed)
        self.count = opts.records  # records that exist (grows with inserts)
        self.keys = chooser(opts.distribution or self.workload.distribution, self.rng,
                            max(opts.records, 1))
        self.value = (os.urandom(opts.value_size // 2 + 1).hex().encode())[:opts.value_size]

    async def load(self, rec: Recorder, on_progress: Callable[[int], None]) -> None:
        numbers = iter(range(self.opts.records))

        async def worker() -> None:
            for n in numbers:
                await self._timed(rec, "insert", self.target.put(record_key(n), self.value, None))
                on_progress(1)

        await asyncio.gather(*(worker() for _ in range(self.opts.concurrency)))

    async def run(self, rec: Recorder, on_progress: Callable[[int], None]) -> None:
        slots = iter(range(self.opts.operations))
        deadline = time.perf_counter() + (self.opts.duration or float("inf"))

        async def worker() -> None:
            for _ in slots:
                if time.perf_counter() >= deadline:
                    return
                op = self.workload.pick(self.rng.random())
                await self._timed(rec, op, self._operation(op))
                on_progress(1)

        await asyncio.gather(*(worker() for _ in range(self.opts.concurrency)))

    def _operation(self, op: str) -> Any:
        if op == "insert":
            n, self.count = self.count, self.count + 1
            return self.target.put(record_key(n), self.value, None)
        n = self.keys.next(max(self.count, 1))
        if op == "read":
            return self.target.get(record_key(n))
        if op == "update":
            return self.target.put(record_key(n), self.value, None)
        if op == "rmw":
            return self._rmw(record_key(n))
        length = self.rng.randint(1, MAX_SCAN_LENGTH)
        return asyncio.gather(*(self.target.get(record_key((n + i) % self.count))
                                for i in range(length)))

    async def _rmw(self, key: bytes) -> None:
        _, ctx = await self.target.get(key)
        await self.target.put(key, self.value, ctx)

    @staticmethod
    async def _timed(rec: Recorder, op: str, awaitable: Any) -> None:
        t0 = time.perf_counter()
        try:
            await awaitable
        except Exception as exc:  # counted, never fatal: the benchmark reports errors
            rec.failed(exc, time.perf_counter())
            return
        rec.ok(op, t0, time.perf_counter())


async def run_bench_async(opts: BenchOptions) -> dict[str, Any]:
    target = await open_target(opts.target, opts.seeds, opts.read_level, opts.write_level,
                               opts.concurrency)
    runner = Runner(opts, target)
    result: dict[str, Any] = {"options": asdict(opts), "workload": runner.workload.summary}
    try:
        if opts.load and opts.records:
            result["load"] = await _phase("load", opts.records, opts.progress, runner.load)
        result["run"] = await _phase(f"workload {runner.workload.name}", opts.operations,
                                     opts.progress, runner.run)
    finally:
        await target.close()
    if opts.plot_dir:
        from ringkv.bench.plots import write_plots

        result["plots"] = write_plots(result, opts.plot_dir)
    return result


async def _phase(title: str, total: int, progress: bool,
                 body: Callable[[Recorder, Callable[[int], None]], Any]) -> dict[str, Any]:
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    rec = Recorder()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]} ops/s"), TimeElapsedColumn(),
                  disable=not progress, transient=False) as bar:
        task = bar.add_task(title, total=total, rate="-")
        last = [0.0]

        def on_progress(n: int) -> None:
            now = time.perf_counter()
            if now - last[0] >= 0.2:
                last[0] = now
                rate = rec.done / max(now - rec.started, 1e-9)
                bar.update(task, completed=rec.done, rate=f"{rate:,.0f}")

        rec.started = time.perf_counter()
        await body(rec, on_progress)
        elapsed = time.perf_counter() - rec.started
        bar.update(task, completed=rec.done, rate=f"{rec.done / max(elapsed, 1e-9):,.0f}")
    return rec.summary(elapsed)


def run_bench(options: BenchOptions | dict[str, Any]) -> dict[str, Any]:
    """Run a benchmark and return its result dict (see module docstring)."""
    if isinstance(options, dict):
        known = {f.name for f in fields(BenchOptions)}
        options = BenchOptions(**{k: v for k, v in options.items() if k in known})
    if isinstance(options.seeds, str):
        options.seeds = tuple(s for s in options.seeds.split(",") if s)
    try:
        import uvloop

        return uvloop.run(run_bench_async(options))
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(run_bench_async(options))


def format_report(result: dict[str, Any]) -> str:
    """A human summary: one line per phase and operation type."""
    opts = result["options"]
    lines = [f"workload {opts['workload']} ({result['workload']}), "
             f"{opts['records']} records, concurrency {opts['concurrency']}, "
             f"{opts['value_size']}-byte values, target {opts['target']} {','.join(opts['seeds'])}"]
    for phase in ("load", "run"):
        if phase not in result:
            continue
        r = result[phase]
        lines.append(f"{phase}: {r['operations']} ops in {r['seconds']:.2f}s = "
                     f"{r['ops_per_s']:,.0f} ops/s, {r['errors']} errors {r['error_kinds'] or ''}")
        for op, s in r["latency_ms"].items():
            lines.append(f"  {op:<7} n={s['count']:<8} p50={s['p50']:.3f}ms p95={s['p95']:.3f}ms "
                         f"p99={s['p99']:.3f}ms p99.9={s['p99.9']:.3f}ms max={s['max']:.3f}ms")
    for path in result.get("plots", []):
        lines.append(f"plot: {path}")
    return "\n".join(lines)


@click.command("bench")
@click.option("--seeds", "--host", "seeds", default="127.0.0.1:7400", show_default=True,
              help="Comma-separated host:port of nodes (for --target resp: the RESP address).")
@click.option("--workload", "-w", type=click.Choice(list("ABCDEFabcdef")), default="A",
              show_default=True, help="YCSB core workload (E is emulated with multi-gets).")
@click.option("--records", type=int, default=10_000, show_default=True, help="Records to load.")
@click.option("--operations", "--ops", type=int, default=100_000, show_default=True,
              help="Operations in the run phase.")
@click.option("--concurrency", "-c", type=int, default=50, show_default=True,
              help="Concurrent requests.")
@click.option("--value-size", type=int, default=100, show_default=True, help="Bytes per value.")
@click.option("--distribution", type=click.Choice(["uniform", "zipfian", "latest"]),
              help="Key distribution (default: the workload's, zipfian or latest for D).")
@click.option("--r", "read_level", help="Read consistency level (ONE, QUORUM, ALL, a number...).")
@click.option("--w", "write_level", help="Write consistency level.")
@click.option("--duration", type=float, help="Stop the run phase after this many seconds.")
@click.option("--no-load", is_flag=True, help="Skip the load phase (records already there).")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False),
              help="Write PNG charts (throughput over time, latency distribution) to DIR.")
@click.option("--target", type=click.Choice(["client", "resp", "memory"]), default="client",
              show_default=True, help="Talk to ringkv's RPC port, a RESP port, or memory.")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def bench_command(seeds: str, workload: str, no_load: bool, as_json: bool, no_progress: bool,
                  read_level: str | None, write_level: str | None, **rest: Any) -> None:
    """Run a YCSB core workload (A-F) and report throughput and latency percentiles."""
    opts = BenchOptions(seeds=tuple(s for s in seeds.split(",") if s), workload=workload.upper(),
                        load=not no_load, progress=not no_progress and not as_json,
                        read_level=_level(read_level), write_level=_level(write_level), **rest)
    result = run_bench(opts)
    click.echo(json.dumps(result) if as_json else format_report(result))


def _level(value: str | None) -> Any:
    if value is None:
        return None
    return int(value) if value.isdigit() else value.upper()


__all__ = ["BenchOptions", "run_bench", "run_bench_async", "format_report", "bench_command"]
