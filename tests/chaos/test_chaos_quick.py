"""The short chaos run of ``make test``, and the checker's own tests.

``test_chaos_quick`` runs :func:`ringkv.chaos.runner.run`: 5 real nodes (N=3, strict
hints mode, QUORUM reads and writes) each in its own network namespace, 6 clients for
45 s while a seeded nemesis kills, pauses and partitions nodes; then it heals, converges
and checks. It asserts zero lost writes, convergence within the stated bound (60 s), no
read-your-writes miss, and prints the run's JSON line. Needs root (skips visibly
otherwise; fails under RINGKV_REQUIRE_ROOT_TESTS=1). Another seed:
``RINGKV_CHAOS_SEED=<n> pytest tests/chaos/test_chaos_quick.py``.

The checker tests below feed :func:`ringkv.chaos.checker.check` made-up histories: it
must find a lost write, accept a superseded one, and not be fooled by a cycle.
"""

from __future__ import annotations

import os
import shutil

import pytest

from ringkv import versions
from ringkv.chaos import checker
from ringkv.chaos.checker import Final
from tests.conftest import require_root, require_tool

SEED = int(os.environ.get("RINGKV_CHAOS_SEED", "20261125"))


@pytest.mark.root
def test_chaos_quick(capsys):
    require_root()
    require_tool("ip", "iproute2")
    from ringkv.chaos.runner import RunConfig, result_line, run

    cfg = RunConfig(seed=SEED, duration_s=45.0, clients=6, rate=60.0, hints_mode="strict",
                    converge_timeout_s=60.0)
    lines: list[str] = []
    result = run(cfg, log=lines.append)
    line = result_line(result)
    with capsys.disabled():
        print("\n" + line)
    detail = "\n".join(lines[-40:])
    assert result["lost_writes"] == 0, f"lost writes; repro: {cfg.repro()}\n{detail}"
    assert result["unverified_writes"] == 0, f"final reads failed\n{detail}"
    assert result["converged"], f"replicas did not converge in 60 s\n{detail}"
    assert result["ryw_missed"] == 0, f"read-your-writes missed in strict mode\n{detail}"
    assert result["faults"] >= 4, detail
    assert result["acked_writes"] > 500, detail


# -- the checker on made-up histories ---------------------------------------------------

def _ctx(**vv: int) -> str:
    return versions.encode_context(vv).hex()


def _w(key: str, value: str, kind: str = "blind", status: str = "ok", ctx_out: str | None = None,
       seen: list[str] | None = None) -> dict:
    return {"cid": 0, "seq": 0, "kind": kind, "key": key, "value": value, "seen": seen or [],
            "ctx_in": None, "ctx_out": ctx_out if status == "ok" else None, "status": status,
            "t0": 0.0, "t1": 0.0}


def test_checker_finds_a_missing_acked_write():
    history = [_w("u/1", "a", "unique", ctx_out=_ctx(n1=1)),
               _w("u/2", "b", "unique", ctx_out=_ctx(n1=1))]
    rep = checker.check(history, {"u/1": Final(["a"]), "u/2": Final([])})
    assert rep.lost_writes == 1 and rep.lost[0]["value"] == "b" and not rep.ok


def test_checker_accepts_a_write_superseded_by_a_read_modify_write():
    history = [_w("r/1", "a", "rmw", ctx_out=_ctx(n1=1)),
               _w("r/1", "b<a", "rmw", ctx_out=_ctx(n1=2), seen=["a"])]
    rep = checker.check(history, {"r/1": Final(["b<a"])})
    assert rep.lost_writes == 0 and rep.ok


def test_checker_follows_an_unacknowledged_write_that_was_applied():
    history = [_w("r/1", "a", "rmw", ctx_out=_ctx(n1=1)),
               _w("r/1", "b<a", "rmw", status="Timeout", seen=["a"]),
               _w("r/1", "c<b", "rmw", ctx_out=_ctx(n1=3), seen=["b<a"])]
    assert checker.check(history, {"r/1": Final(["c<b"])}).ok
    # ... but a timed-out write that never shows up supersedes nothing
    history = history[:2]
    rep = checker.check(history, {"r/1": Final([])})
    assert rep.lost_writes == 1 and rep.unacked_writes == 1


def test_checker_uses_returned_contexts_for_blind_writes():
    history = [_w("b/1", "a", ctx_out=_ctx(n1=1)),
               _w("b/1", "b", ctx_out=_ctx(n1=2, n2=1))]
    assert checker.check(history, {"b/1": Final(["b"])}).ok
    # a concurrent blind write (contexts not ordered) must still be there
    history = [_w("b/1", "a", ctx_out=_ctx(n1=1)), _w("b/1", "b", ctx_out=_ctx(n2=1))]
    assert checker.check(history, {"b/1": Final(["b"])}).lost_writes == 1


def test_checker_is_not_fooled_by_equal_contexts_or_cycles():
    # two writes that share a dot (same returned context): neither saw the other
    history = [_w("b/1", "a", ctx_out=_ctx(n1=5)), _w("b/1", "b", ctx_out=_ctx(n1=5))]
    assert checker.check(history, {"b/1": Final(["b"])}).lost_writes == 1
    # two read-modify-writes claiming each other, neither in the final read
    history = [_w("r/1", "a", "rmw", ctx_out=_ctx(n1=1), seen=["b"]),
               _w("r/1", "b", "rmw", ctx_out=_ctx(n2=1), seen=["a"])]
    assert checker.check(history, {"r/1": Final(["z"])}).lost_writes == 2


def test_checker_unreadable_key_and_read_your_writes():
    history = [_w("u/1", "a", "unique", ctx_out=_ctx(n1=1)),
               {**_w("u/1", "a", "ryw"), "status": "missed"}]
    rep = checker.check(history, {"u/1": Final(None)}, ryw_enforced=True)
    assert len(rep.unverified) == 1 and len(rep.ryw_missed) == 1 and not rep.ok
    rep = checker.check(history, {"u/1": Final(["a"])}, ryw_enforced=False)
    assert rep.ok and rep.ryw_checks == 1


@pytest.mark.root
def test_chaos_checker_catches_a_real_loss():
    """Negative control on a real cluster: delete acknowledged values behind the checker's
    back (no faults, 8 s of workload); the run must report exactly those as lost."""
    require_root()
    require_tool("ip", "iproute2")
    from ringkv.chaos.runner import RunConfig, run

    lines: list[str] = []
    result = run(RunConfig(seed=SEED, duration_s=8.0, kinds=(), sabotage=3, subnet=3),
                 log=lines.append)
    assert result["lost_writes"] == 3, "\n".join(lines[-30:])
    assert not result["ok"]
    shutil.rmtree(result["dir"], ignore_errors=True)
