"""The simulator catches real bugs: each deliberate bug (ringkv/sim/bugs.py) makes the
checker fail within a bounded number of seeds, while the same seeds pass without it."""

from __future__ import annotations

import pytest

from tests.sim.simhelp import explain, sim

# bug -> (fault profile, workload rate, seeds tried, first failing seed measured)
CASES = {
    "hint_replay_dropped": ("partition,oneway,loss,dup,delay", 40.0, 3),
    "stale_read_repair": ("all", 40.0, 12),
    "ack_before_fsync": ("power", 200.0, 12),
}


@pytest.mark.parametrize("bug", sorted(CASES))
def test_bug_is_caught_within_bounded_seeds(bug: str) -> None:
    faults, rate, bound = CASES[bug]
    for seed in range(1, bound + 1):
        res = sim(seed, duration=30.0, faults=faults, rate=rate, bugs=(bug,))
        if not res.ok:
            print(f"{bug}: caught at seed {seed}: {res.failures}")
            break
    else:
        pytest.fail(f"{bug} not caught in {bound} seeds ({faults}, rate {rate})")
    clean = sim(seed, duration=30.0, faults=faults, rate=rate)
    assert clean.ok, explain(clean, faults)


def test_bug_switches_restore() -> None:
    from ringkv.sim import bugs

    with bugs.enabled("stale_read_repair"):
        assert "stale_read_repair" in bugs.ACTIVE
    assert not bugs.ACTIVE
    with pytest.raises(ValueError):
        with bugs.enabled("no_such_bug"):
            pass
