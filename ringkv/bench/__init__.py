"""Benchmarks shipped with ringkv: ``ringkv bench`` (YCSB core workloads, :mod:`ringkv.bench.ycsb`)."""
