"""Coordinator: levels, Unavailable before sending, write/read quorums, read repair.

Driven by a fake transport (a dict of scripted replica answers) and FakeClock: no
sockets, no sleeps. Version sets are stood in by frozensets joined by union, which has
the same laws (associative, commutative, idempotent) as versions.join.
"""

from __future__ import annotations

import ast

import pytest

from ringkv import coordinator as co
from ringkv.compiled import source_path
from ringkv.errors import InvalidRequest, Timeout, Unavailable
from ringkv.testing.fake_clock import FakeClock

DC = {"a1": "dc1", "a2": "dc1", "a3": "dc1", "b1": "dc2", "b2": "dc2"}
ONE_DC = ["a1", "a2", "a3"]
TWO_DC = ["a1", "a2", "a3", "b1", "b2"]
RF1 = {"dc1": 3}
RF2 = {"dc1": 3, "dc2": 2}


def req(level, replicas=ONE_DC, rf=RF1, local="dc1"):
    return co.requirement(co.parse_level(level), replicas, DC, rf, local)


def union(a, b):
    return a | b


EMPTY = frozenset()


class FakeTransport:
    """Scripted replicas: answer (value), fail ('fail') or stay silent ('silent')."""

    def __init__(self, clock: FakeClock, script: dict[str, object], timeout: float = 2.0):
        self.clock, self.script, self.timeout = clock, script, timeout

    def run_read(self, quorum: co.ReadQuorum, order):
        """Deliver replies in ``order`` one per millisecond; fire the timer at the deadline."""
        deadline = self.clock.monotonic() + self.timeout
        outcome = None
        for node in order:
            self.clock.advance(0.001)
            answer = self.script[node]
            if answer == "silent":
                continue
            got = quorum.fail(node) if answer == "fail" else quorum.reply(node, answer)
            outcome = outcome or got
        if not quorum.complete:
            self.clock.set(deadline)
            got = quorum.timeout()
            outcome = outcome or got
        return outcome


# ------------------------------------------------------------------ levels


@pytest.mark.parametrize("level,total", [
    ("ONE", 1), ("TWO", 2), ("THREE", 3), ("QUORUM", 2), ("ALL", 3), (1, 1), (2, 2), ("3", 3),
    ("one", 1), ("LOCAL_ONE", 1), ("LOCAL_QUORUM", 2), ("EACH_QUORUM", 2),
])
def test_levels_single_dc(level, total):
    assert req(level).total == total


@pytest.mark.parametrize("level,groups", [
    ("QUORUM", [(TWO_DC, 3)]),
    ("ALL", [(TWO_DC, 5)]),
    ("LOCAL_ONE", [(["a1", "a2", "a3"], 1)]),
    ("LOCAL_QUORUM", [(["a1", "a2", "a3"], 2)]),
    ("EACH_QUORUM", [(["a1", "a2", "a3"], 2), (["b1", "b2"], 2)]),
])
def test_levels_two_dcs(level, groups):
    r = req(level, TWO_DC, RF2)
    assert [(list(g), n) for g, n in r.groups] == groups


def test_local_levels_follow_the_coordinators_dc():
    r = req("LOCAL_QUORUM", TWO_DC, RF2, local="dc2")
    assert r.groups == ((("b1", "b2"), 2),)


def test_local_level_in_a_dc_without_replicas_is_unavailable():
    r = req("LOCAL_ONE", ONE_DC, RF1, local="dc9")
    assert isinstance(co.check_alive(r, lambda n: True), Unavailable)


@pytest.mark.parametrize("bad", ["", "SOME", "QUORUMX", 0, -1, 1.5, True, b"ONE", [1], 10**9])
def test_invalid_levels_are_refused(bad):
    with pytest.raises(InvalidRequest):
        co.parse_level(bad)


def test_default_level_applies_to_none():
    assert co.parse_level(None, "ALL") == "ALL"


# ------------------------------------------------------------------ before sending


def test_unavailable_when_too_few_alive():
    r = req("QUORUM")
    out = co.check_alive(r, lambda n: n == "a1")
    assert isinstance(out, Unavailable) and (out.required, out.alive) == (2, 1)
    assert co.check_alive(r, lambda n: n != "a3") is None


def test_numeric_level_above_replication_is_unavailable():
    out = co.check_alive(req(4), lambda n: True)
    assert isinstance(out, Unavailable) and (out.required, out.alive) == (4, 3)


def test_each_quorum_needs_every_dc():
    r = req("EACH_QUORUM", TWO_DC, RF2)
    assert isinstance(co.check_alive(r, lambda n: n != "b2"), Unavailable)
    assert co.check_alive(r, lambda n: n != "a3") is None


def test_targets_and_forwarding():
    alive = lambda n: n != "a2"  # noqa: E731
    assert co.targets(TWO_DC, alive, "a1") == ["a3", "b1", "b2"]
    assert co.forward_target(["b1", "a2", "a3"], alive, DC, "dc1") == "a3"
    assert co.forward_target(["b1", "a2"], alive, DC, "dc1") == "b1"
    assert co.forward_target(["a2"], alive, DC, "dc1") is None


# ------------------------------------------------------------------ writes


def test_write_succeeds_at_w_acks():
    q = co.WriteQuorum(req("QUORUM"), ONE_DC)
    assert q.ack("a1") is None
    out = q.ack("a2")
    assert isinstance(out, co.Success) and out.received == 2
    assert q.ack("a3") is out  # decided once


def test_duplicate_acks_do_not_count():
    q = co.WriteQuorum(req("QUORUM"), ONE_DC)
    assert q.ack("a1") is None and q.ack("a1") is None


def test_acks_from_uncontacted_nodes_do_not_count():
    q = co.WriteQuorum(req("QUORUM"), ["a1", "a2"])
    assert q.ack("zz") is None and q.ack("a3") is None
    assert isinstance(q.ack("a2"), co.Success) is False
    assert isinstance(q.ack("a1"), co.Success)


def test_write_timeout_reports_required_and_received():
    q = co.WriteQuorum(req("ALL"), ONE_DC)
    q.ack("a1")
    out = q.timeout()
    assert isinstance(out, Timeout) and (out.required, out.received) == (3, 1)


def test_write_fails_fast_when_requirement_becomes_impossible():
    q = co.WriteQuorum(req("QUORUM"), ONE_DC)
    q.ack("a1")
    assert q.fail("a2") is None
    out = q.fail("a3")
    assert isinstance(out, Timeout) and (out.required, out.received) == (2, 1)


def test_local_quorum_ignores_remote_dc_acks():
    q = co.WriteQuorum(req("LOCAL_QUORUM", TWO_DC, RF2), TWO_DC)
    assert q.ack("b1") is None and q.ack("b2") is None and q.ack("a1") is None
    assert isinstance(q.ack("a3"), co.Success)


def test_each_quorum_waits_for_every_dc():
    q = co.WriteQuorum(req("EACH_QUORUM", TWO_DC, RF2), TWO_DC)
    for node in ("a1", "a2", "a3", "b1"):
        assert q.ack(node) is None
    assert isinstance(q.ack("b2"), co.Success)


# ------------------------------------------------------------------ reads


def test_read_joins_and_repairs_stale_replicas():
    clock = FakeClock()
    fake = FakeTransport(clock, {"a1": frozenset({"v1", "v2"}), "a2": frozenset({"v1"}),
                                 "a3": None})
    q = co.ReadQuorum(req("ALL"), ONE_DC, union, EMPTY)
    out = fake.run_read(q, ["a1", "a2", "a3"])
    assert isinstance(out, co.Success) and out.value == {"v1", "v2"}
    assert q.complete and q.repairs() == ["a2", "a3"]


def test_read_answers_at_r_then_collects_late_replies_for_repair():
    q = co.ReadQuorum(req("ONE"), ONE_DC, union, EMPTY)
    out = q.reply("a1", frozenset({"old"}))
    assert isinstance(out, co.Success) and out.value == {"old"}
    assert not q.complete
    assert q.reply("a2", frozenset({"old", "new"})) is out
    q.reply("a3", frozenset({"old", "new"}))
    assert q.complete and q.repairs() == ["a1"]


def test_read_timeout_after_answer_completes_without_the_silent_replica():
    clock = FakeClock()
    fake = FakeTransport(clock, {"a1": frozenset({"x"}), "a2": frozenset({"x"}), "a3": "silent"})
    q = co.ReadQuorum(req("QUORUM"), ONE_DC, union, EMPTY)
    out = fake.run_read(q, ["a1", "a2", "a3"])
    assert isinstance(out, co.Success) and q.complete and q.repairs() == []


def test_read_timeout_before_answer():
    clock = FakeClock()
    fake = FakeTransport(clock, {"a1": frozenset({"x"}), "a2": "silent", "a3": "silent"})
    q = co.ReadQuorum(req("QUORUM"), ONE_DC, union, EMPTY)
    out = fake.run_read(q, ["a1", "a2", "a3"])
    assert isinstance(out, Timeout) and (out.required, out.received) == (2, 1)


def test_read_failures_make_timeout_fast():
    clock = FakeClock()
    start = clock.monotonic()
    fake = FakeTransport(clock, {"a1": "fail", "a2": "fail", "a3": frozenset()})
    q = co.ReadQuorum(req("QUORUM"), ONE_DC, union, EMPTY)
    out = None
    for node in ("a1", "a2"):
        out = out or q.fail(node)
    assert isinstance(out, Timeout) and out.received == 0
    assert clock.monotonic() == start and fake.script["a3"] == frozenset()


# ------------------------------------------------------------------ purity


def test_coordinator_does_no_io():
    tree = ast.parse(source_path(co.__name__).read_text())
    banned = {"asyncio", "socket", "time", "os", "threading", "random", "subprocess"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & banned
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in banned


# ------------------------------------------------------------------ read targets and spares


def test_read_targets_contact_just_enough_replicas_self_first():
    alive = lambda n: True  # noqa: E731
    assert co.read_targets(req("QUORUM"), ONE_DC, alive, "a2") == ["a2", "a1"]
    assert co.read_targets(req("ONE"), ONE_DC, alive, "zz") == ["a1"]
    assert co.read_targets(req("QUORUM"), ONE_DC, alive, "a2", everyone=True) == ["a2", "a1", "a3"]
    r = req("EACH_QUORUM", TWO_DC, RF2)
    assert co.read_targets(r, TWO_DC, alive, "b2") == ["b2", "a1", "a2", "b1"]
    r = req("LOCAL_QUORUM", TWO_DC, RF2, local="dc2")
    assert co.read_targets(r, TWO_DC, alive, "a1") == ["b1", "b2"]


def test_read_targets_skip_dead_replicas():
    assert co.read_targets(req("QUORUM"), ONE_DC, lambda n: n != "a1", "zz") == ["a2", "a3"]


def test_a_failed_replica_is_replaced_by_a_spare():
    r = req("QUORUM")
    q = co.ReadQuorum(r, co.read_targets(r, ONE_DC, lambda n: True, "a1"), union, EMPTY)
    assert q.contacted == ["a1", "a2"]
    q.reply("a1", frozenset({"x"}))
    spare = co.spare_targets(ONE_DC, q.contacted, lambda n: True)
    assert spare == ["a3"]
    q.add("a3")
    assert q.fail("a2") is None  # still possible with the spare
    out = q.reply("a3", frozenset({"x"}))
    assert isinstance(out, co.Success) and q.complete and q.repairs() == []
