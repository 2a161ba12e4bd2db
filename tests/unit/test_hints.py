"""The sloppy-quorum policy (ringkv.hints): stand-ins, strict mode, bounds."""

from __future__ import annotations

from ringkv import coordinator as co
from ringkv import hints
from ringkv.ring import NodeInfo, Ring

WALK = ["a", "b", "c", "d", "e", "f"]
PREF = ["a", "b", "c"]


def alive_except(*down: str):
    return lambda n: n not in down


def test_all_alive_needs_no_stand_in():
    plan = hints.plan_write(PREF, WALK, alive_except(), "sloppy", "a")
    assert plan == hints.WritePlan(("a", "b", "c"))
    assert plan.contacted("a") == ["a", "b", "c"]


def test_down_replica_gets_next_live_node_beyond_the_preference_list():
    plan = hints.plan_write(PREF, WALK, alive_except("b"), "sloppy", "a")
    assert plan.live == ("a", "c")
    assert plan.stand_ins == (("b", "d"),)
    assert plan.missing == ()
    assert plan.contacted("a") == ["a", "c", "b"]
    assert plan.stand_in_of == {"b": "d"}


def test_stand_ins_are_distinct_and_skip_dead_nodes():
    plan = hints.plan_write(PREF, WALK, alive_except("b", "c", "d"), "sloppy", "a")
    assert plan.stand_ins == (("b", "e"), ("c", "f"))


def test_walk_order_is_followed_past_the_wrap():
    walk = ["c", "d", "a", "b"]  # clockwise from the key's token
    plan = hints.plan_write(["c", "d", "a"], walk, alive_except("d"), "sloppy", "c")
    assert plan.stand_ins == (("d", "b"),)


def test_no_candidate_left_means_missing():
    plan = hints.plan_write(PREF, ["a", "b", "c", "d"], alive_except("b", "c"), "sloppy", "a")
    assert plan.stand_ins == (("b", "d"),)
    assert plan.missing == ("c",)
    assert plan.counts("b") and not plan.counts("c")


def test_stand_in_is_in_the_owner_data_center():
    dc = {"a": "dc1", "b": "dc2", "c": "dc1", "d": "dc1", "e": "dc2"}
    plan = hints.plan_write(PREF, WALK, alive_except("b"), "sloppy", "a", dc)
    assert plan.stand_ins == (("b", "e"),)
    plan = hints.plan_write(PREF, WALK, alive_except("b", "e"), "sloppy", "a", dc)
    assert plan.stand_ins == () and plan.missing == ("b",)


def test_strict_and_off_never_use_a_stand_in():
    for mode in ("strict", "off"):
        plan = hints.plan_write(PREF, WALK, alive_except("b"), mode, "a")
        assert plan.stand_ins == () and plan.missing == ("b",)
    assert hints.keeps_hints("strict") and not hints.keeps_hints("off")


def test_sloppy_plan_makes_all_available_but_strict_does_not():
    req = co.requirement("ALL", PREF, {}, {"dc1": 3}, "dc1")
    sloppy = hints.plan_write(PREF, WALK, alive_except("c"), "sloppy", "a")
    strict = hints.plan_write(PREF, WALK, alive_except("c"), "strict", "a")
    assert co.check_alive(req, sloppy.counts) is None
    err = co.check_alive(req, strict.counts)
    assert err is not None and (err.required, err.alive) == (3, 2)


def test_write_quorum_counts_a_stand_in_ack_as_the_owner():
    req = co.requirement("ALL", PREF, {}, {"dc1": 3}, "dc1")
    plan = hints.plan_write(PREF, WALK, alive_except("c"), "sloppy", "a")
    q = co.WriteQuorum(req, plan.contacted("a"))
    assert q.ack("a") is None and q.ack("b") is None
    assert isinstance(q.ack("c"), co.Success)  # the stand-in's ack is reported as "c"


def test_plan_on_a_real_ring():
    nodes = [NodeInfo(f"n{i}", (i * 1000,)) for i in range(1, 6)]
    ring = Ring(nodes, {"dc1": 3})
    token = 1500
    pref, walk = ring.replicas(token), ring.walk(token)
    plan = hints.plan_write(pref, walk, alive_except(pref[1]), "sloppy", pref[0])
    assert plan.stand_ins == ((pref[1], walk[3]),)


def test_bounds():
    assert hints.expired(0.0, 11.0, 10.0) and not hints.expired(0.0, 10.0, 10.0)
    assert hints.over_bound(5, 5) and not hints.over_bound(4, 5)
    assert hints.replay_batches(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert hints.replay_batches(0, 2) == []


def test_only_a_removed_targets_hints_are_redirected():
    assert hints.redirects("removed")
    for state in ("normal", "joining", "leaving", "down", None):  # None: not known (yet)
        assert not hints.redirects(state)
