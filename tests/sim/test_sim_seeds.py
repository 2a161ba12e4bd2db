"""Many seeds, every fault: no acknowledged write lost, replicas converge, and in strict
mode every read sees the reader's own acknowledged writes. A failing seed prints the
command that replays it (same seed, same history)."""

from __future__ import annotations

import pytest

from tests.sim.simhelp import explain, sim

BATCH = 20
SLOPPY_BATCHES = 10  # 200 seeds
STRICT_BATCHES = 5  # 100 seeds


def _run_batch(first: int, faults: str, mode: str) -> None:
    failed = []
    for seed in range(first, first + BATCH):
        res = sim(seed, duration=15.0, faults=faults, mode=mode)
        if not res.ok:
            failed.append(explain(res, faults))
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("batch", range(SLOPPY_BATCHES))
def test_sloppy_all_faults(batch: int) -> None:
    _run_batch(1000 + batch * BATCH, "all", "sloppy")


@pytest.mark.parametrize("batch", range(STRICT_BATCHES))
def test_strict_all_faults(batch: int) -> None:
    _run_batch(5000 + batch * BATCH, "all", "strict")
