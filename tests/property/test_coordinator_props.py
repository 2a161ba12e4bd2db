"""Hypothesis properties of the quorum state machines.

A random cluster (two dcs), a random level, random replica behaviour (answer with some
version set, fail, stay silent) delivered in a random order, then the timer. Version sets
are frozensets joined by union (a join semilattice, like versions.join).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv import coordinator as co
from ringkv.errors import Timeout, Unavailable

NODES = ["a1", "a2", "a3", "a4", "b1", "b2", "b3"]
DC = {n: ("dc1" if n[0] == "a" else "dc2") for n in NODES}

levels = st.one_of(st.sampled_from(co.LEVELS), st.integers(1, 6))
behaviour = st.one_of(st.just("fail"), st.just("silent"),
                      st.frozensets(st.sampled_from("vwxyz"), max_size=3))


@st.composite
def scenarios(draw):
    rf = {"dc1": draw(st.integers(1, 4)), "dc2": draw(st.integers(0, 3))}
    replicas = [n for n in NODES if n[0] == "a"][: rf["dc1"]] + \
               [n for n in NODES if n[0] == "b"][: rf["dc2"]]
    replicas = draw(st.permutations(replicas))
    rf = {dc: n for dc, n in rf.items() if n}
    level = draw(levels)
    local = draw(st.sampled_from(["dc1", "dc2"]))
    alive = {n: draw(st.booleans()) for n in replicas}
    acts = {n: draw(behaviour) for n in replicas}
    order = draw(st.permutations(replicas))
    return rf, replicas, level, local, alive, acts, order


def satisfied(req, acked):
    return all(sum(1 for n in g if n in acked) >= k for g, k in req.groups)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_write_outcome_matches_the_acks(sc):
    rf, replicas, level, local, alive, acts, order = sc
    req = co.requirement(level, replicas, DC, rf, local)
    unavailable = co.check_alive(req, lambda n: alive[n])
    contacted = [n for n in replicas if alive[n]]
    if unavailable is not None:
        assert isinstance(unavailable, Unavailable) and unavailable.required == req.total
        assert not satisfied(req, set(contacted))
        return
    q = co.WriteQuorum(req, contacted)
    acked: set[str] = set()
    first = None
    for node in order:
        if node not in contacted or acts[node] == "silent":
            continue
        if acts[node] == "fail":
            out = q.fail(node)
        else:
            acked.add(node)
            out = q.ack(node)
        if first is None and out is not None:
            first = out
            if isinstance(out, co.Success):
                assert satisfied(req, acked)
        assert out is first  # decided once, never changes
    final = q.timeout()
    assert first is None or final is first
    if isinstance(final, co.Success):
        assert satisfied(req, acked)
    else:
        assert isinstance(final, Timeout) and final.required == req.total
        assert not satisfied(req, acked) or first is not None
    if all(acts[n] not in ("fail", "silent") for n in contacted):
        assert isinstance(final, co.Success)  # everyone alive answered: check_alive was right


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_read_join_and_repairs(sc):
    rf, replicas, level, local, alive, acts, order = sc
    req = co.requirement(level, replicas, DC, rf, local)
    if co.check_alive(req, lambda n: alive[n]) is not None:
        return
    contacted = [n for n in replicas if alive[n]]
    q = co.ReadQuorum(req, contacted, lambda a, b: a | b, frozenset())
    answered = {}
    for node in order:
        if node not in contacted or acts[node] == "silent":
            continue
        if acts[node] == "fail":
            q.fail(node)
        else:
            answered[node] = acts[node]
            out = q.reply(node, acts[node])
            if isinstance(out, co.Success) and out is q.outcome and out.received:
                assert out.value <= q.merged
    q.timeout()
    assert q.complete
    merged = frozenset().union(*answered.values()) if answered else frozenset()
    assert q.merged == merged
    assert sorted(q.repairs()) == sorted(n for n, vs in answered.items() if vs != merged)
    if isinstance(q.outcome, co.Success):
        assert satisfied(req, set(answered))


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.booleans())
def test_read_targets_can_meet_the_requirement(sc, everyone):
    rf, replicas, level, local, alive, acts, order = sc
    req = co.requirement(level, replicas, DC, rf, local)
    me = replicas[0]
    alive_fn = lambda n: n == me or alive[n]  # noqa: E731
    if co.check_alive(req, alive_fn) is not None:
        return
    targets = co.read_targets(req, replicas, alive_fn, me, everyone)
    assert len(set(targets)) == len(targets) and all(alive_fn(t) for t in targets)
    assert satisfied(req, set(targets))  # if they all answer, the read succeeds
    if everyone:
        assert sorted(targets) == sorted(r for r in replicas if alive_fn(r))
