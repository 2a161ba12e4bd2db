"""Hypothesis properties of ringkv.versions over realistic histories.

Version sets are not drawn at random (random sets could give one dot two values, which no
real history does); they come from random histories on three replicas: puts and deletes
coordinated by a replica with a context from any earlier read, and syncs (joins) between
replicas. Every state ever seen may be picked as an operand.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv import versions as v
from ringkv.versions import EMPTY, join, update

NODES = ("s1", "s2", "s3")
STEP = st.tuples(st.sampled_from(["put", "delete", "sync", "read"]), st.sampled_from(NODES),
                 st.sampled_from(NODES), st.integers(0, 10_000))


class History:
    """The replicas' states, every state seen, and each write's dot and context."""

    def __init__(self) -> None:
        self.replicas = dict.fromkeys(NODES, EMPTY)
        self.seen: list[v.VersionSet] = [EMPTY]
        self.writes: list[tuple[tuple[str, int], dict[str, int]]] = []

    def step(self, op: str, node: str, other: str, pick: int) -> None:
        if op == "sync":
            self.replicas[other] = join(self.replicas[other], self.replicas[node])
            self.seen.append(self.replicas[other])
        elif op == "read":
            self.seen.append(join(self.replicas[node], self.replicas[other]))
        else:
            ctx = v.context(self.seen[pick % len(self.seen)])  # a possibly stale read
            value = None if op == "delete" else b"w%d" % len(self.writes)
            new = update(self.replicas[node], ctx, node, value, float(len(self.writes)))
            self.writes.append(((node, new.vv[node]), ctx))
            self.replicas[node] = new
            self.seen.append(new)

    def final(self) -> v.VersionSet:
        out = EMPTY
        for state in self.replicas.values():
            out = join(out, state)
        return out


@st.composite
def histories(draw) -> History:
    h = History()
    for step in draw(st.lists(STEP, max_size=30)):
        h.step(*step)
    return h


@st.composite
def states(draw, count: int):
    h = draw(histories())
    return [h.seen[draw(st.integers(0, len(h.seen) - 1))] for _ in range(count)]


SETTINGS = settings(max_examples=300, deadline=None)


@SETTINGS
@given(states(3))
def test_join_is_associative(abc):
    a, b, c = abc
    assert join(join(a, b), c) == join(a, join(b, c))


@SETTINGS
@given(states(2))
def test_join_is_commutative(ab):
    a, b = ab
    assert join(a, b) == join(b, a)


@SETTINGS
@given(states(2))
def test_join_is_idempotent_and_an_upper_bound(ab):
    a, b = ab
    assert join(a, a) == a == join(a, EMPTY)
    assert join(a, v.decode(v.encode(a))) == a
    ab_ = join(a, b)
    assert join(ab_, a) == ab_ and v.descends(ab_, a) and v.descends(ab_, b)


@SETTINGS
@given(states(2), st.sampled_from(NODES), st.none() | st.binary(max_size=8))
def test_update_dominates_local_and_context(ab, node, value):
    local, read = ab
    ctx = v.context(read)
    new = update(local, ctx, node, value, 1.0)
    assert v.descends(new, local) and v.vv_descends(new.vv, ctx)
    assert not v.vv_descends(local.vv, new.vv)  # the new dot is news to the old state
    assert (node, new.vv[node]) in [(s.node, s.counter) for s in new.siblings]
    assert value is None or value in v.values(new)
    assert v.sibling_count(new) <= v.sibling_count(local) + 1


@SETTINGS
@given(states(2))
def test_merge_bytes_is_join_and_encode_round_trips(ab):
    a, b = ab
    ea, eb = v.encode(a), v.encode(b)
    assert v.decode(ea) == a
    assert v.merge_bytes(ea, eb) == v.encode(join(a, b)) == v.merge_bytes(eb, ea)
    assert v.decode_context(v.encode_context(a.vv)) == a.vv


@SETTINGS
@given(states(1), st.sampled_from(NODES), st.none() | st.binary(max_size=8), st.booleans())
def test_merge_bytes_of_a_write_minted_from_the_stored_set(a, node, value, read_first):
    """merge_bytes' shortcut: a replica's stored set meets a write minted from it with its
    vv as the context (the coordinator read that version: the write supersedes it, and the
    answer is the write's own bytes); with an empty context the write is concurrent with
    the stored siblings and the full join answers. Either order gives the same bytes."""
    (a,) = a
    new = update(a, a.vv if read_first else {}, node, value, 1.0)
    ea, en = v.encode(a), v.encode(new)
    want = v.encode(join(a, new))
    assert v.merge_bytes(ea, en) == want == v.merge_bytes(en, ea)
    if read_first:
        assert want == en


@SETTINGS
@given(histories())
def test_exactly_the_writes_no_context_saw_survive(h):
    """No lost update and no false sibling: after every replica syncs, the siblings are
    exactly the writes that no later write's context covered."""
    survivors = sorted(dot for dot, _ in h.writes
                       if not any(ctx.get(dot[0], 0) >= dot[1] for _, ctx in h.writes))
    final = h.final()
    assert [(s.node, s.counter) for s in final.siblings] == survivors
    assert v.sibling_count(final) <= len(h.writes)


@SETTINGS
@given(histories())
def test_read_repair_converges(h):
    merged = h.final()
    for state in h.replicas.values():
        repaired = merged if v.is_stale(state, merged) else state
        assert repaired == merged


def _purgeable_by_decoding(data: bytes, now: float, grace: float) -> bool:
    """The definition, with no shortcut: every sibling a tombstone older than the grace."""
    return all(s.value is None and s.timestamp <= now - grace for s in v.decode(data).siblings)


@SETTINGS
@given(states(1), st.floats(0, 40.0), st.binary(max_size=40))
def test_purgeable_shortcut_agrees_with_decoding(state, now, suffix):
    # values drawn as arbitrary bytes, so some hold msgpack nil (0xc0) and some do not
    vs = state[0]
    vs = v.VersionSet(vs.vv, tuple(s if s.value is None else s._replace(value=s.value + suffix)
                                   for s in vs.siblings))
    data = v.encode(vs)
    assert v.purgeable(data, now, 5.0) == _purgeable_by_decoding(data, now, 5.0)


@SETTINGS
@given(states(1))
def test_vv_of_stored_is_the_decoded_vv(state):
    data = v.encode(state[0])
    assert v.vv_of_stored(data) == v.decode(data).vv
