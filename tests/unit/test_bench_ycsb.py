"""ringkv bench (YCSB): generators, workload mixes and a full run against the memory target."""

from __future__ import annotations

import collections
import random

from click.testing import CliRunner

from ringkv.bench.generators import WORKLOADS, Latest, ScrambledZipfian, Uniform, Zipfian, record_key
from ringkv.bench.ycsb import BenchOptions, bench_command, format_report, run_bench


def test_zipfian_is_skewed_and_in_range():
    z = Zipfian(random.Random(1), 1000)
    draws = [z.next(1000) for _ in range(20000)]
    assert all(0 <= d < 1000 for d in draws)
    counts = collections.Counter(draws)
    assert counts[0] > counts[10] > counts[500]  # popularity falls with rank
    assert counts[0] / len(draws) > 0.05


def test_zipfian_grows_with_inserts():
    z = Zipfian(random.Random(2), 10)
    assert all(0 <= z.next(50) < 50 for _ in range(1000))


def test_scrambled_zipfian_spreads_the_hot_keys():
    s = ScrambledZipfian(random.Random(3), 1000)
    top = collections.Counter(s.next(1000) for _ in range(20000)).most_common(5)
    assert any(k > 100 for k, _ in top)


def test_latest_prefers_new_records():
    latest = Latest(random.Random(4), 1000)
    draws = [latest.next(1000) for _ in range(5000)]
    assert sum(d >= 900 for d in draws) > sum(d < 100 for d in draws) * 3


def test_uniform_and_keys():
    u = Uniform(random.Random(5))
    assert all(0 <= u.next(7) < 7 for _ in range(100))
    assert record_key(1) != record_key(2) and record_key(1).startswith(b"user")


def test_workload_mixes():
    rng = random.Random(6)
    for name, w in WORKLOADS.items():
        ops = collections.Counter(w.pick(rng.random()) for _ in range(4000))
        for op in ("read", "update", "insert", "scan", "rmw"):
            share = getattr(w, op)
            assert abs(ops[op] / 4000 - share) < 0.03, (name, op)


def test_every_workload_runs_against_memory(tmp_path):
    for name in "ABCDEF":
        result = run_bench(BenchOptions(workload=name, target="memory", records=200, operations=400,
                                        concurrency=8, progress=False,
                                        plot_dir=str(tmp_path) if name == "A" else None))
        run = result["run"]
        assert run["operations"] == 400 and run["errors"] == 0, name
        for stats in run["latency_ms"].values():
            assert stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["p99.9"] <= stats["max"]
        assert result["load"]["operations"] == 200
        assert "workload" in format_report(result)
    assert (tmp_path / "throughput.png").stat().st_size > 1000
    assert (tmp_path / "latency.png").stat().st_size > 1000


def test_duration_bounds_the_run():
    result = run_bench({"workload": "C", "target": "memory", "records": 50, "operations": 10**9,
                        "concurrency": 4, "duration": 0.3, "progress": False})
    assert 0 < result["run"]["operations"] < 10**9
    assert result["run"]["seconds"] < 5


def test_errors_are_counted_not_fatal():
    from ringkv.bench import targets
    from ringkv.errors import Unavailable

    class Failing(targets.MemoryTarget):
        async def get(self, key):
            raise Unavailable(2, 1)

    orig = targets.MemoryTarget
    targets.MemoryTarget = Failing  # type: ignore[misc]
    try:
        result = run_bench({"workload": "C", "target": "memory", "records": 10, "operations": 50,
                            "concurrency": 2, "progress": False})
    finally:
        targets.MemoryTarget = orig  # type: ignore[misc]
    assert result["run"]["errors"] == 50 and result["run"]["error_kinds"] == {"Unavailable": 50}


def test_cli_json():
    out = CliRunner().invoke(bench_command, ["--target", "memory", "--records", "20", "--operations", "40",
                                             "-c", "2", "--workload", "b", "--json"])
    assert out.exit_code == 0, out.output
    assert '"ops_per_s"' in out.output
