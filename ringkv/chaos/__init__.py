"""Chaos testing with real processes: workload, nemesis, checker, network namespaces.

``python -m ringkv.chaos`` runs one seeded chaos test (see :mod:`ringkv.chaos.runner`);
tests/chaos/ calls :func:`ringkv.chaos.runner.run` directly. docs/reliability.md
describes the schedule, the checks and the figures measured.
"""
