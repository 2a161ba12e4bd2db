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
    assert m.data[b"k"] == (b"z", None, True) and is_final(m.data[b"k"], cat)
    m.apply(b"k", b"w", cat)
    assert m.data[b"k"] == (b"z+w", None, True)


def test_combine_and_visible():
    assert combine(b"a", b"b", None) == b"b"
    assert combine(b"a", 3.0, cat) == 3.0
    assert combine([b"a", None, True], b"b", cat) == (b"a+b", None, True)
    assert visible([b"v", 10.0, False], 9.0) == b"v"
    assert visible([b"v", 10.0, False], 10.0) is None
    assert visible(2.0, 0.0) is None


def test_size_accounts_real_memory():
    # entry_cost is measured from sys.getsizeof; it must cover what Python actually
    # allocates for the entries (tracemalloc: requested sizes, before allocator rounding)
    import os
    import tracemalloc

    from ringkv.storage.memtable import ENTRY_OVERHEAD, entry_cost

    n = 20000
    keys = [os.urandom(16) for _ in range(n)]
    vals = [os.urandom(100) for _ in range(n)]
    tracemalloc.start()
    m = Memtable()
    for k, v in zip(keys, vals):
        m.apply(bytes(bytearray(k)), bytes(bytearray(v)), None)
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert used <= m.size <= 1.5 * used
    assert m.size == n * (16 + 100 + ENTRY_OVERHEAD)
    assert 200 <= entry_cost(keys[0], vals[0]) <= 300  # ~260 B measured as RSS on 3.11
    assert entry_cost(b"k", 1.0) < entry_cost(b"k", b"v" * 100) < entry_cost(b"k", [b"v" * 100, 5.0, False])
