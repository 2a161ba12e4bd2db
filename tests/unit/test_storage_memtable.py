"""Memtable and entry folding (entry.combine)."""

from __future__ import annotations

from ringkv.storage.entry import combine, is_final, visible
from ringkv.storage.memtable import Memtable, snapshot_items


def cat(older: bytes, newer: bytes) -> bytes:
    return older + b"+" + newer


def test_lww_apply_and_order():
    m = Memtable()
    for k, v in [(b"b", b"1"), (b"a", b"2"), (b"b", b"3"), (b"c", 5.0)]:
        m.apply(k, v, None)
    assert m.data == {b"a": b"2", b"b": b"3", b"c": 5.0}
    assert list(m.items()) == [(b"a", b"2"), (b"b", b"3"), (b"c", 5.0)]
    assert list(m.items(b"b", b"c")) == [(b"b", b"3")]
    assert m.size > 0 and len(m) == 3
    assert snapshot_items(m.data, b"a", b"c") == [(b"a", b"2"), (b"b", b"3")]


def test_merge_apply_and_delete_base():
    m = Memtable()
    m.apply(b"k", b"x", cat)
    m.apply(b"k", b"y", cat)
    assert m.data[b"k"] == b"x+y" and not is_final(m.data[b"k"], cat)
    m.apply(b"k", 1.0, cat)
    m.apply(b"k", b"z", cat)
    assert m.data[b"k"] == [b"z", None, True] and is_final(m.data[b"k"], cat)
    m.apply(b"k", b"w", cat)
    assert m.data[b"k"] == [b"z+w", None, True]


def test_combine_and_visible():
    assert combine(b"a", b"b", None) == b"b"
    assert combine(b"a", 3.0, cat) == 3.0
    assert combine([b"a", None, True], b"b", cat) == [b"a+b", None, True]
    assert visible([b"v", 10.0, False], 9.0) == b"v"
    assert visible([b"v", 10.0, False], 10.0) is None
    assert visible(2.0, 0.0) is None
