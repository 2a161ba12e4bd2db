"""Deterministic simulation: the real nodes of a cluster in one process, in virtual time,
with seeded network, disk and process faults (docs/simulation.md).

Kept import-free: production modules import :mod:`ringkv.sim.bugs` (the deliberate-bug
switches), which must not pull the simulator in.
"""
