"""Unit tests of ringkv.streaming: ring views, pending replicas, plans, progress (pure)."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from ringkv import coordinator as co
from ringkv import streaming as st
from ringkv.ring import (TOKEN_SPACE, NodeInfo, Ring, generate_tokens, in_range, range_width,
                         storage_key, token_for, token_of)

RF = {"dc1": 3}


def owners(n: int, seed: int = 7, tokens: int = 8, state: str = "normal") -> list[st.Owner]:
    rng = random.Random(seed)
    return [st.Owner(f"n{i}", state, generate_tokens(rng, tokens), generation=10)
            for i in range(1, n + 1)]


def newcomer(node_id: str = "n9", state: str = "joining", seed: int = 99,
             tokens: tuple[int, ...] | None = None, generation: int = 20) -> st.Owner:
    toks = tokens if tokens is not None else generate_tokens(random.Random(seed), 8)
    return st.Owner(node_id, state, toks, generation=generation)


def keys(count: int = 3000) -> list[bytes]:
    return [b"k%d" % i for i in range(count)]


def everyone(_node: str) -> bool:
    return True


def covered(tasks: list[st.StreamTask], target: str, token: int) -> list[st.StreamTask]:
    return [t for t in tasks if t.target == target and in_range(token, t.start, t.end)]


# -- ring views and pending replicas -------------------------------------------------------


def test_stable_view_has_no_pending_and_one_ring():
    view = st.RingView(owners(4), RF)
    assert not view.moving
    assert view.future_ring is view.read_ring
    assert all(view.pending(token_for(k)) == [] for k in keys(200))


def test_joining_node_is_pending_not_read():
    base = owners(3)
    view = st.RingView(base + [newcomer()], RF)
    assert view.moving and "n9" not in view.read_ring and "n9" in view.future_ring
    after = Ring([o.info() for o in base] + [newcomer().info()], RF)
    hits = 0
    for k in keys():
        t = token_for(k)
        expect = [n for n in after.replicas(t) if n not in view.read_ring.replicas(t)]
        assert view.pending(t) == expect
        assert set(view.pending(t)) <= {"n9"}
        hits += bool(expect)
    assert hits > 0
    assert [n.node_id for n in view.all_nodes] == ["n1", "n2", "n3", "n9"]


def test_leaving_node_reads_until_gone_and_its_new_owners_are_pending():
    base = owners(4)
    leaving = [o if o.node_id != "n2" else st.Owner("n2", "leaving", o.tokens, generation=10)
               for o in base]
    view = st.RingView(leaving, RF)
    assert "n2" in view.read_ring and "n2" not in view.future_ring
    for k in keys(500):
        t = token_for(k)
        p = view.pending(t)
        if "n2" in view.read_ring.replicas(t):
            assert len(p) == 1 and p[0] != "n2"
        else:
            assert p == []


def test_replacement_is_inferred_from_tokens_and_generation():
    base = owners(4)
    dead = base[1]
    repl = newcomer("n9", "joining", tokens=dead.tokens, generation=50)
    view = st.RingView(base + [repl], RF)
    assert view.replaced == {"n2": "n9"}
    assert "n2" in view.read_ring and "n9" not in view.read_ring
    assert "n9" in view.future_ring and "n2" not in view.future_ring
    for k in keys(500):  # n9 is pending exactly where n2 is a replica
        t = token_for(k)
        assert view.pending(t) == (["n9"] if "n2" in view.read_ring.replicas(t) else [])
    done = st.RingView(base + [newcomer("n9", "normal", tokens=dead.tokens, generation=50)], RF)
    assert "n2" not in done.read_ring and not done.moving


def test_older_node_never_replaces_a_newer_one():
    base = owners(3)
    older = newcomer("n9", "joining", tokens=base[0].tokens, generation=1)
    view = st.RingView(base + [older], RF)
    assert "n1" not in view.replaced and "n1" in view.read_ring


# -- forwarding writes that land after a range moved (D23) ---------------------------------


def test_a_finished_join_hands_over_to_the_nodes_it_took_ranges_from():
    """After a join, writes also reach the old replicas of the ranges that moved, while
    the handover lasts: a coordinator that still sees the join running reads them."""
    base = owners(3)
    during = st.RingView(base + [newcomer()], RF)
    after = st.RingView(base + [newcomer(state="normal")], RF)
    assert st.join_finished(during, after)
    view = st.RingView(base + [newcomer(state="normal")], RF, previous=during.read_ring)
    assert view.moving and view.previous_ring is during.read_ring
    moved = 0
    for k in keys():
        t = token_for(k)
        old, new = during.read_ring.replicas(t), view.read_ring.replicas(t)
        assert view.pending(t) == []
        assert view.handover(t) == [n for n in old if n not in new]
        # a write acked by W + P of old + new replicas leaves a quorum in both sets
        targets = new + view.handover(t)
        req = st.with_pending(co.Requirement(2, ((tuple(new), 2),)), view.handover(t), {})
        need = req.groups[0][1]
        for acked in _subsets(targets, need):
            assert len(set(acked) & set(old)) >= 2 and len(set(acked) & set(new)) >= 2
        moved += bool(view.handover(t))
    assert 0 < moved < len(keys())


def _subsets(items: list[str], size: int) -> list[tuple[str, ...]]:
    return list(itertools.combinations(items, size))


def test_no_handover_without_a_finished_join():
    base = owners(3)
    # meeting nodes that were normal all along (a fresh cluster) is not a move
    assert not st.join_finished(st.RingView(base[:1], RF), st.RingView(base, RF))
    # a join starting is not one either: the joining node is pending, not handed over to
    assert not st.join_finished(st.RingView(base, RF), st.RingView(base + [newcomer()], RF))
    # the same ring as before hands over nothing
    same = st.RingView(base, RF, previous=st.RingView(base, RF).read_ring)
    assert not same.moving and same.previous_ring is None
    assert all(same.handover(token_for(k)) == [] for k in keys(200))


def test_handover_skips_nodes_no_longer_published_normal():
    """A replaced node's ranges are not handed back to it: it is dead and removed."""
    base = owners(3)
    dead = base[2]
    replacement = newcomer("n9", "normal", tokens=dead.tokens)
    during = st.RingView(base + [newcomer("n9", "joining", tokens=dead.tokens)], RF)
    after = st.RingView(base[:2] + [replacement], RF, previous=during.read_ring)
    assert st.join_finished(during, after)
    assert all(after.handover(token_for(k)) == [] for k in keys(300))


def test_forward_targets_empty_for_every_replica_of_a_stable_ring():
    view = st.RingView(owners(4), RF)
    for k in keys(300):
        t = token_for(k)
        for n in view.read_ring.replicas(t):
            assert view.forward_targets(t, n) == []


def test_a_node_that_holds_no_replica_forwards_to_every_replica():
    view = st.RingView(owners(4), RF)  # e.g. the old owner after a join finished
    hits = 0
    for k in keys(300):
        t = token_for(k)
        for n in ("n1", "n2", "n3", "n4", "gone"):
            if n not in view.read_ring.replicas(t):
                assert view.forward_targets(t, n) == view.read_ring.replicas(t)
                hits += 1
    assert hits > 300


def test_a_joins_giver_forwards_to_the_pending_node_only():
    view = st.RingView(owners(3) + [newcomer()], RF)
    gave = 0
    for k in keys():
        t = token_for(k)
        read, future = view.read_ring.replicas(t), view.future_ring.replicas(t)
        for n in read:
            expect = view.pending(t) if n not in future else []
            assert view.forward_targets(t, n) == expect
            gave += bool(expect)
        if "n9" in future:  # the joining node keeps what it gets for its new ranges
            assert view.forward_targets(t, "n9") == []
    assert gave > 0


def test_a_leaving_node_forwards_to_its_ranges_new_owners():
    base = owners(4)
    leaving = [o if o.node_id != "n2" else st.Owner("n2", "leaving", o.tokens, generation=10)
               for o in base]
    view = st.RingView(leaving, RF)
    hits = 0
    for k in keys(500):
        t = token_for(k)
        got = view.forward_targets(t, "n2")
        if "n2" in view.read_ring.replicas(t):
            assert got == view.pending(t) and len(got) == 1 and got[0] != "n2"
            hits += 1
        else:  # not a replica of either ring: everyone of both (without duplicates)
            both = view.read_ring.replicas(t) + view.future_ring.replicas(t)
            assert got == list(dict.fromkeys(both))
    assert hits > 0


def test_forward_targets_of_an_empty_view_is_empty():
    assert st.RingView([], RF).forward_targets(123, "n1") == []


# -- write requirement with pending replicas -------------------------------------------------


def test_with_pending_adds_one_ack_per_pending_replica():
    req = co.requirement("QUORUM", ["a", "b", "c"], {}, RF, "dc1")
    more = st.with_pending(req, ["d"], {})
    assert more.groups == ((("a", "b", "c", "d"), 3),)
    assert st.with_pending(co.requirement("ALL", ["a", "b", "c"], {}, RF, "dc1"), ["d"], {}).total == 4
    assert st.with_pending(req, [], {}) == req


def test_with_pending_keeps_dc_scoped_groups_in_their_dc():
    dc_of = {"a": "dc1", "b": "dc1", "x": "dc2", "d": "dc1", "y": "dc2"}
    rep = {"dc1": 2, "dc2": 1}
    local = co.requirement("LOCAL_QUORUM", ["a", "x", "b"], dc_of, rep, "dc1")
    assert st.with_pending(local, ["y"], dc_of) == local
    assert st.with_pending(local, ["d"], dc_of).groups == ((("a", "b", "d"), 3),)
    each = co.requirement("EACH_QUORUM", ["a", "x", "b"], dc_of, rep, "dc1")
    both = st.with_pending(each, ["d", "y"], dc_of)
    assert both.groups == ((("a", "b", "d"), 3), (("x", "y"), 2))


# -- plans ------------------------------------------------------------------------------------


def test_join_plan_covers_exactly_what_the_new_node_gains_from_the_giver():
    base = owners(3)
    me = newcomer()
    view = st.RingView(base + [me], RF)
    tasks = st.join_plan(view, me.info(), everyone)
    after = view.read_ring.with_node(me.info())
    for k in keys():
        t = token_for(k)
        gains = "n9" in after.replicas(t)
        found = covered(tasks, "n9", t)
        assert bool(found) == gains
        if gains:
            old = view.read_ring.replicas(t)
            lost = [n for n in old if n not in after.replicas(t)]
            assert found[0].sources[0] == lost[0]  # the replica giving the range up
            assert set(found[0].sources) == set(old)


def test_join_plan_without_a_live_giver_streams_the_union_of_survivors():
    base = owners(3)
    me = newcomer()
    view = st.RingView(base + [me], RF)
    down = "n1"
    tasks = st.join_plan(view, me.info(), lambda n: n != down)
    after = view.read_ring.with_node(me.info())
    for k in keys(1000):
        t = token_for(k)
        old, new = view.read_ring.replicas(t), after.replicas(t)
        found = covered(tasks, "n9", t)
        if "n9" in new and down in old and down not in new:
            assert sorted(x.sources[0] for x in found) == sorted(n for n in old if n != down)


def test_leave_plan_sends_every_range_to_its_new_owner():
    view = st.RingView(owners(5), RF)
    tasks = st.leave_plan(view, "n3")
    after = view.read_ring.without_node("n3")
    assert all(t.sources == ("n3",) for t in tasks)
    for k in keys():
        t = token_for(k)
        if "n3" in view.read_ring.replicas(t):
            gained = [n for n in after.replicas(t) if n not in view.read_ring.replicas(t)]
            assert sorted(x.target for x in covered(tasks, "n9", t) + [
                x for x in tasks if in_range(t, x.start, x.end)]) == sorted(gained)
        else:
            assert not [x for x in tasks if in_range(t, x.start, x.end)]
    assert st.leave_plan(view, "nobody") == []


def test_remove_plan_streams_from_every_survivor():
    view = st.RingView(owners(5), RF)
    tasks = st.remove_plan(view, "n2", everyone)
    after = view.read_ring.without_node("n2")
    for k in keys(1000):
        t = token_for(k)
        old = view.read_ring.replicas(t)
        mine = [x for x in tasks if in_range(t, x.start, x.end)]
        if "n2" in old:
            gained = [n for n in after.replicas(t) if n not in old]
            assert {x.target for x in mine} == set(gained)
            assert sorted(x.sources[0] for x in mine) == sorted(n for n in old if n != "n2")
            assert all("n2" not in x.sources for x in mine)
        else:
            assert mine == []


def test_replace_plan_targets_the_dead_nodes_ranges_only():
    base = owners(4)
    me = newcomer("n9", tokens=base[0].tokens, generation=50)
    view = st.RingView(base + [me], RF)
    tasks = st.replace_plan(view, me.info(), "n1", lambda n: n != "n1")
    width = sum(range_width(t.start, t.end) for t in tasks if t.sources[0] == tasks[0].sources[0])
    assert width > 0
    for k in keys(1000):
        t = token_for(k)
        mine = covered(tasks, "n9", t)
        assert bool(mine) == ("n1" in view.read_ring.replicas(t))
        assert all("n1" not in x.sources for x in mine)


def test_first_live_skips_dead_and_tried():
    assert st.first_live(("a", "b", "c"), lambda n: n != "a", ["b"]) == "c"
    assert st.first_live(("a",), lambda n: False) is None


# -- scan bounds and cursors -----------------------------------------------------------------


@pytest.mark.parametrize("start,end", [(10, 2**63), (2**63, 10), (TOKEN_SPACE - 1, 5),
                                       (5, TOKEN_SPACE - 1), (7, 7)])
def test_resume_bounds_continue_after_the_cursor(start, end):
    skeys = sorted(storage_key(k) for k in keys(2000))
    inside = [s for s in skeys if in_range(token_of(s), start, end)]

    def scan(bounds):
        return [s for lo, hi in bounds for s in skeys if lo <= s and (hi is None or s < hi)]

    assert scan(st.resume_bounds(start, end, None)) == inside
    assert all(st.in_bounds(s, start, end) for s in inside)
    for cut in range(0, len(inside), max(1, len(inside) // 7)):
        after = inside[cut]
        assert scan(st.resume_bounds(start, end, after)) == inside[cut + 1:]


# -- progress -------------------------------------------------------------------------------


def test_progress_round_trips_and_resumes():
    p = st.Progress("join", "n9")
    p.plan([st.StreamTask(1, 5, "n9", ("n1", "n2")), st.StreamTask(5, 9, "n9", ("n2",))])
    p.plan([])  # a resumed operation keeps its plan
    assert len(p.tasks) == 2 and p.next_task() == 0
    p.advance(0, b"\x00" * 8 + b"k1", 10, 100, finished=False)
    assert p.cursors == {0: b"\x00" * 8 + b"k1"}
    q = st.Progress.from_dict(p.to_dict())
    assert q == p
    q.advance(0, None, 3, 30, finished=True)
    assert q.next_task() == 1 and q.cursors == {} and q.keys == 13
    q.advance(1, None, 0, 0, finished=True)
    assert q.next_task() is None
    assert q.summary()["tasks_done"] == 2 and q.summary()["percent"] == 100.0


def test_progress_rejects_unknown_ops_and_formats():
    with pytest.raises(ValueError):
        st.Progress("move", "n1")
    with pytest.raises(ValueError):
        st.Progress.from_dict({"format": 9})


def test_owner_of_takes_membership_records():
    from ringkv.membership_record import Member

    m = Member("n1", "h", 1, 2, "dc2", "r", (5, 6), "joining", 3, 4)
    assert st.owner_of(m) == st.Owner("n1", "joining", (5, 6), "dc2", "r", "h", 1, 2, 3)
    assert st.owner_of(m).info() == NodeInfo("n1", (5, 6), "dc2", "r", "h", 1, 2)


# -- paging a range (the shell's scan helper, on a fake engine) ---------------------------


class FakeEngine:
    def __init__(self, items: dict[bytes, bytes]) -> None:
        self.items = dict(sorted(items.items()))

    def scan(self, start: bytes = b"", end: bytes | None = None):
        return (kv for kv in list(self.items.items())
                if kv[0] >= start and (end is None or kv[0] < end))


@pytest.mark.parametrize("start,end", [(2**62, 2**63), (2**63, 2**62), (9, 9)])
def test_scan_pages_cover_a_range_once(start, end):
    from ringkv.streaming_io import scan_page as _scan_batch

    engine = FakeEngine({storage_key(k): b"v" * 20 for k in keys(1500)})
    expect = [s for s in engine.items if in_range(token_of(s), start, end)]
    got: list[bytes] = []
    after = None
    for _ in range(10_000):
        page, after = _scan_batch(engine, start, end, after, 300)
        got += [k for k, _ in page]
        if after is None:
            break
    assert sorted(got) == expect and len(set(got)) == len(got)  # a wrap scans high first


# -- the shell's start-up decisions (files only, no sockets) -------------------------------


def _fake_node(tmp_path, **streaming):
    from types import SimpleNamespace

    from ringkv.config import NodeConfig, RingkvConfig, StreamingConfig

    cfg = RingkvConfig(node=NodeConfig(node_id="n9", data_dir=str(tmp_path)),
                       streaming=StreamingConfig(**streaming))
    return SimpleNamespace(config=cfg, node_id="n9")


async def test_fresh_node_with_join_starts_joining_and_persists_it(tmp_path):
    from ringkv.topology import STATE_FILE, TopologyManager

    tm = TopologyManager(_fake_node(tmp_path, join=True))
    await tm.prepare()
    assert tm.initial_state() == "joining" and (tmp_path / STATE_FILE).exists()
    again = TopologyManager(_fake_node(tmp_path))  # restarted without the flag: resumes
    await again.prepare()
    assert again.initial_state() == "joining" and again.progress.op == "join"


async def test_known_node_ignores_join_and_decommissioned_node_refuses(tmp_path):
    from ringkv.errors import ConfigError
    from ringkv.streaming_io import write_atomic
    from ringkv.topology import STATE_FILE, TopologyManager

    (tmp_path / "node.toml").write_text("")  # an identity exists: not a fresh node
    tm = TopologyManager(_fake_node(tmp_path, join=True))
    await tm.prepare()
    assert tm.initial_state() == "normal" and tm.progress is None
    done = st.Progress("decommission", "n9", status="done")
    write_atomic(tmp_path / STATE_FILE, json.dumps(done.to_dict()))
    with pytest.raises(ConfigError, match="decommissioned"):
        await TopologyManager(_fake_node(tmp_path)).prepare()
    leaving = st.Progress("decommission", "n9", status="streaming")
    write_atomic(tmp_path / STATE_FILE, json.dumps(leaving.to_dict()))
    tm = TopologyManager(_fake_node(tmp_path))
    await tm.prepare()
    assert tm.initial_state() == "leaving"


async def test_replace_must_use_a_new_node_id(tmp_path):
    from ringkv.errors import ConfigError
    from ringkv.topology import TopologyManager

    with pytest.raises(ConfigError, match="new node id"):
        await TopologyManager(_fake_node(tmp_path, replace="n9")).prepare()
