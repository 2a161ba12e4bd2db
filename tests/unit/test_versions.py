"""Unit tests of ringkv.versions: the DVV textbook cases, deletes, encoding and engine hooks."""

from __future__ import annotations


import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv import versions as v
from ringkv.errors import Corruption, InvalidRequest
from ringkv.versions import EMPTY, join, update


def read(*replicas: v.VersionSet) -> v.VersionSet:
    """What a coordinator returns for a get: the join of the replicas' sets."""
    out = EMPTY
    for r in replicas:
        out = join(out, r)
    return out


def dots(vs: v.VersionSet) -> list[tuple[str, int]]:
    return [(s.node, s.counter) for s in vs.siblings]


# -- the textbook case -------------------------------------------------------------------


def test_textbook_concurrent_writes_become_siblings_then_resolve():
    # written at S1 twice: [S1,2]
    s1 = update(EMPTY, {}, "S1", b"v1", 1.0)
    s1 = update(s1, v.context(s1), "S1", b"v2", 2.0)
    assert s1.vv == {"S1": 2} and v.values(s1) == [b"v2"]
    # S2 and S3 (each a replica that has S1's version) take concurrent writes from that context
    ctx = v.context(s1)
    s2 = update(s1, ctx, "S2", b"from-S2", 3.0)
    s3 = update(s1, ctx, "S3", b"from-S3", 3.0)
    # a reader sees both siblings, and a context covering both
    seen = read(s1, s2, s3)
    assert sorted(v.values(seen)) == [b"from-S2", b"from-S3"]
    assert v.context(seen) == {"S1": 2, "S2": 1, "S3": 1}
    # the put that resolves them, coordinated anywhere, leaves one value
    resolved = update(s2, v.context(seen), "S2", b"merged", 4.0)
    after = read(s1, s3, resolved)
    assert v.values(after) == [b"merged"] and v.sibling_count(after) == 1
    assert v.vv_descends(after.vv, {"S1": 2, "S2": 1, "S3": 1})
    assert v.descends(after, seen) and not v.descends(seen, after)


def test_stale_context_adds_a_sibling_current_context_replaces():
    a = update(EMPTY, {}, "A", b"one", 1.0)
    stale = v.context(a)
    b = update(a, stale, "A", b"two", 2.0)
    assert v.values(b) == [b"two"]  # current context: replaced
    c = update(b, stale, "A", b"three", 3.0)
    assert v.values(c) == [b"two", b"three"]  # stale context: "two" was not seen, kept
    d = update(c, v.context(c), "A", b"four", 4.0)
    assert v.values(d) == [b"four"]


def test_put_without_context_is_concurrent_with_everything():
    a = update(EMPTY, {}, "A", b"x", 1.0)
    b = update(a, {}, "A", b"y", 2.0)
    assert v.values(b) == [b"x", b"y"]


def test_retrying_a_put_with_the_same_context_adds_one_sibling_per_retry():
    # Inherent: the coordinator cannot tell a retry from a new concurrent write.
    base = update(EMPTY, {}, "A", b"base", 1.0)
    ctx = v.context(base)
    state = base
    for i in range(3):
        state = update(state, ctx, "A", b"retry", 2.0 + i)
    assert v.sibling_count(state) == 3
    # one read-and-write resolves them all
    assert v.sibling_count(update(state, v.context(state), "A", b"fixed", 9.0)) == 1


def test_concurrent_clients_through_one_coordinator_keep_exactly_their_writes():
    # Five clients read the same version, then all write through coordinator A. With plain
    # per-server vector clocks four writes would be lost; with client-id clocks siblings
    # would grow with clients. DVV keeps exactly the five concurrent writes.
    state = update(EMPTY, {}, "A", b"base", 1.0)
    ctx = v.context(state)
    for i in range(5):
        state = update(state, ctx, "A", b"client-%d" % i, 2.0 + i)
    assert sorted(v.values(state)) == [b"client-%d" % i for i in range(5)]
    # clients that read before writing (one at a time) never add siblings
    state = update(state, v.context(state), "A", b"resolved", 10.0)
    for i in range(50):
        state = update(state, v.context(state), "A", b"seq-%d" % i, 11.0 + i)
        assert v.sibling_count(state) == 1


def test_no_sibling_explosion_from_alternating_writers():
    # Riak's classic explosion: two clients alternate, each reusing the context its own last
    # put returned. Each put drops what its writer had seen, so siblings stay at two.
    state = EMPTY
    ctx = {"c1": {}, "c2": {}}
    for i in range(100):
        who = "c1" if i % 2 == 0 else "c2"
        state = update(state, ctx[who], "A", b"%s-%d" % (who.encode(), i), float(i))
        ctx[who] = v.context(state)
        assert v.sibling_count(state) <= 2


def test_counter_continues_from_a_context_ahead_of_local_state():
    # A node that lost its data must not mint a dot it already minted before.
    fresh = update(EMPTY, {"A": 7}, "A", b"x", 1.0)
    assert dots(fresh) == [("A", 8)]


def test_hostile_context_cannot_make_a_key_unreadable():
    # A context may claim at most 2**62, so a dot minted from it still decodes.
    with pytest.raises(InvalidRequest):
        v.decode_context(v.encode_context({"A": v.MAX_CONTEXT_COUNTER + 1}))
    ctx = v.decode_context(v.encode_context({"A": v.MAX_CONTEXT_COUNTER}))
    state = update(EMPTY, ctx, "A", b"x", 1.0)
    assert v.decode(v.encode(state)) == state
    with pytest.raises(InvalidRequest):
        update(EMPTY, {"A": v.MAX_COUNTER}, "A", b"x", 1.0)


def test_update_refuses_nan_timestamp():
    with pytest.raises(ValueError):
        update(EMPTY, {}, "A", b"x", float("nan"))


# -- deletes -----------------------------------------------------------------------------


def test_delete_is_a_version():
    live = update(EMPTY, {}, "A", b"x", 1.0)
    gone = update(live, v.context(live), "A", None, 2.0)
    assert v.values(gone) == [] and v.is_deleted(gone) and v.sibling_count(gone) == 1
    back = update(gone, v.context(gone), "B", b"y", 3.0)
    assert v.values(back) == [b"y"] and not v.is_deleted(back) and v.sibling_count(back) == 1
    assert not v.is_deleted(EMPTY)


def test_delete_does_not_erase_a_write_it_did_not_see():
    base = update(EMPTY, {}, "A", b"x", 1.0)
    ctx = v.context(base)
    write = update(base, ctx, "B", b"concurrent", 2.0)
    delete = update(base, ctx, "A", None, 2.0)
    seen = read(write, delete)
    assert v.values(seen) == [b"concurrent"] and v.sibling_count(seen) == 2
    assert not v.is_deleted(seen)


def test_purgeable_only_when_all_tombstones_are_older_than_grace():
    live = update(EMPTY, {}, "A", b"x", 100.0)
    gone = update(live, v.context(live), "A", None, 200.0)
    assert not v.purgeable(v.encode(live), now=10_000.0, grace=10.0)
    assert not v.purgeable(v.encode(gone), now=205.0, grace=10.0)
    assert v.purgeable(v.encode(gone), now=210.0, grace=10.0)
    mixed = update(gone, {}, "B", b"y", 1.0)
    assert not v.purgeable(v.encode(mixed), now=10_000.0, grace=10.0)


# -- comparisons -------------------------------------------------------------------------


def test_descends_and_is_stale():
    a = update(EMPTY, {}, "A", b"x", 1.0)
    b = update(a, v.context(a), "B", b"y", 2.0)
    assert v.descends(b, a) and not v.descends(a, b) and v.descends(a, a)
    merged = read(a, b)
    assert v.is_stale(a, merged) and not v.is_stale(b, merged)
    assert v.is_stale(None, merged) and not v.is_stale(None, EMPTY)


def test_latest_picks_greatest_timestamp():
    a = update(EMPTY, {}, "A", b"old", 1.0)
    b = update(a, {}, "B", b"new", 5.0)
    c = update(b, {}, "C", b"mid", 3.0)
    assert v.latest(c).value == b"new"
    assert v.latest(EMPTY) is None


def test_context_is_a_copy():
    a = update(EMPTY, {}, "A", b"x", 1.0)
    v.context(a)["A"] = 99
    assert a.vv == {"A": 1}


# -- encoding ----------------------------------------------------------------------------


def test_encode_round_trips_and_is_deterministic():
    a = update(EMPTY, {}, "zeta", b"x", 1.5)
    b = update(a, {}, "alpha", None, 2.0)
    c = join(update(EMPTY, {}, "alpha", None, 2.0), b)
    assert v.decode(v.encode(b)) == b
    reordered = v.VersionSet(dict(reversed(list(b.vv.items()))), b.siblings)
    assert v.encode(reordered) == v.encode(b) == v.encode(c)
    assert v.decode(v.encode(EMPTY)) == EMPTY


def test_encoding_is_compact():
    one = update(EMPTY, {"n2": 4, "n3": 9}, "n1", b"x" * 100, 1.0)
    assert len(v.encode(one)) <= 100 + 40


def test_context_round_trip():
    vv = {"b": 3, "a": 1}
    assert v.decode_context(v.encode_context(vv)) == vv
    assert v.encode_context(vv) == v.encode_context({"a": 1, "b": 3})
    assert v.decode_context(v.encode_context({})) == {}


def _pack(obj) -> bytes:
    return msgpack.packb(obj)


GARBAGE_SETS = [
    b"", b"\xc1", b"\x93\x01", b"not msgpack at all", _pack(None), _pack([1, 2]),
    _pack([2, [], []]),                                      # unknown format
    _pack([1, ["a"], []]),                                   # odd vv
    _pack([1, ["b", 1, "a", 1], []]),                        # vv not sorted
    _pack([1, ["a", 0], []]),                                # counter 0
    _pack([1, ["a", 2**63], []]),                            # counter too big
    _pack([1, ["a", True], []]),                             # bool counter
    _pack([1, [b"a", 1], []]),                               # bytes node id
    _pack([1, ["a", 1], ["a", 2, b"x", 1.0]]),               # dot not covered by vv
    _pack([1, ["a", 1], ["a", 1, "str", 1.0]]),              # value not bytes
    _pack([1, ["a", 1], ["a", 1, b"x", 1]]),                 # int timestamp
    _pack([1, ["a", 2], ["a", 2, b"x", 1.0, "a", 1, b"y", 1.0]]),  # siblings not sorted
    _pack([1, ["a", 1], ["a", 1, b"x", 1.0, "a", 1, b"y", 1.0]]),  # one dot twice
    _pack([1, ["a", 1], [["a"], 1, b"x", 1.0]]),             # unhashable node
    _pack([1, ["a", 1], ["a", 1, b"x"]]),                    # short sibling
    _pack([1, [], []]) + b"\x00",                            # trailing bytes
    _pack([True, [], []]),                                   # bool format
]


@pytest.mark.parametrize("data", GARBAGE_SETS)
def test_decode_of_garbage_raises_invalid_request(data):
    with pytest.raises(InvalidRequest):
        v.decode(data)
    with pytest.raises(InvalidRequest):  # the replicas' check refuses what decode refuses
        v.check(data)


def _some_sets() -> list[v.VersionSet]:
    a = update(EMPTY, {}, "n1", b"x" * 300, 1.0)
    b = update(a, v.context(a), "n1", None, 2.0)
    c = join(b, update(EMPTY, {"n1": 1}, "n2", b"", 3.0))
    d = join(c, update(EMPTY, {}, "n3", b"z", 4.0))
    return [EMPTY, a, b, c, d, v.VersionSet({"n1": 5}, ())]


def test_encode_is_the_same_with_a_reused_packer():
    """The node encodes with its own msgpack.Packer: the bytes must not change, the
    encoding being canonical (equal sets, equal bytes) across nodes and versions."""
    pack = msgpack.Packer().pack
    for vs in _some_sets():
        flat_vv = [x for node in sorted(vs.vv) for x in (node, vs.vv[node])]
        flat_sib = [x for s in vs.siblings for x in s]
        reference = msgpack.packb([v.FORMAT, flat_vv, flat_sib])
        assert v.encode(vs) == v.encode(vs, pack) == reference
        assert v.encode_context(vs.vv, pack) == v.encode_context(vs.vv) == msgpack.packb(
            [v.FORMAT, flat_vv])
        v.check(reference)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(6)), st.integers(0, 400), st.integers(0, 255))
def test_check_refuses_exactly_what_decode_refuses(which, at, byte):
    """A replica's ``check`` and ``decode`` agree on every damaged encoding."""
    data = bytearray(v.encode(_some_sets()[which]))
    data[at % len(data)] = byte
    try:
        v.decode(bytes(data))
    except InvalidRequest:
        with pytest.raises(InvalidRequest):
            v.check(bytes(data))
    else:
        v.check(bytes(data))


@pytest.mark.parametrize("data", [b"", b"\xff\xff", _pack([1, ["a"]]), _pack([1, ["a", -1]]),
                                  _pack([1, ["a", 2**64 - 1]]), _pack({"a": 1}), _pack([1, 2, 3])])
def test_decode_context_of_garbage_raises_invalid_request(data):
    with pytest.raises(InvalidRequest):
        v.decode_context(data)


def test_engine_hooks_report_garbage_as_corruption():
    good = v.encode(update(EMPTY, {}, "A", b"x", 1.0))
    with pytest.raises(Corruption):
        v.merge_bytes(good, b"\xc1junk")
    with pytest.raises(Corruption):
        v.purgeable(b"\xc1junk", 1.0, 0.0)
    with pytest.raises(Corruption):
        v.vv_of_stored(b"\xc1junk")
    with pytest.raises(Corruption):
        v.vv_of_stored(_pack([1, ["a", -1], []]))


def test_merge_bytes_is_join():
    a = update(EMPTY, {}, "A", b"x", 1.0)
    b = update(EMPTY, {}, "B", b"y", 1.0)
    assert v.decode(v.merge_bytes(v.encode(a), v.encode(b))) == join(a, b)
    assert v.merge_bytes(v.encode(a), v.encode(a)) == v.encode(a)


def test_merge_bytes_keeps_siblings_and_drops_superseded_ones():
    a = update(EMPTY, {}, "A", b"x", 1.0)  # [A1]
    b = update(a, a.vv, "B", b"y", 2.0)  # [A1][B1] superseding x
    c = update(a, {}, "C", b"z", 3.0)  # concurrent with b: a blind write at C from x's state
    ea, eb, ec = v.encode(a), v.encode(b), v.encode(c)
    assert v.merge_bytes(ea, eb) == eb and v.merge_bytes(eb, ea) == eb  # b supersedes a
    both = v.decode(v.merge_bytes(eb, ec))
    assert both == join(b, c) and sorted(v.values(both)) == [b"y", b"z"]
    # equal vvs, different siblings: each side has seen the other's sibling and neither
    # holds it, so the join keeps neither (no shortcut applies)
    other = v.VersionSet(dict(b.vv), (v.Sibling("A", 1, b"x", 1.0),))
    assert v.merge_bytes(v.encode(other), eb) == v.encode(join(other, b))
    assert v.decode(v.merge_bytes(v.encode(other), eb)).siblings == ()


def test_merge_bytes_reports_a_damaged_sibling_dot_as_corruption():
    good = v.encode(update(EMPTY, {}, "A", b"x", 1.0))
    bad = _pack([1, ["B", 1], [["B"], 1, b"y", 1.0]])  # a dot whose node is not a string
    with pytest.raises(Corruption):
        v.merge_bytes(good, bad)


