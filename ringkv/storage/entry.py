"""What the engine stores per key, in memtables and SSTable blocks alike.

An *entry* is one of three Python shapes, chosen so the common case costs nothing:

* ``bytes`` -- a live value. In merge mode it is an *operand*: it must be merged with the
  entries for the same key in older sources.
* ``float`` -- a tombstone, written at that wall-clock time (used for ``gc_grace``).
* ``(value, expire_at, base)`` -- a value with a TTL (``expire_at`` not None; LWW mode
  only) and/or a merge *base* (``base`` True: older sources are shadowed, e.g. the value
  written after a delete). The engine builds it as a tuple; read back from an SSTable it
  is a list (msgpack's array), and every function here takes either.

Why a tuple (a coordinator's every write is a base, so most memtable entries have this
shape): a tuple of bytes, None and bools is untracked by the cyclic garbage collector at
its first young collection, while a list stays tracked, so every full collection walked
every entry of every memtable (measured: a full collection over 160k such entries, one
32 MiB memtable, took 10.3 ms with lists and 0.5 ms with tuples, each time a pause of the event loop).

Invariant: :func:`combine` is the one place where two entries for a key meet; reads,
flushes, compactions and scans all fold a key's entries newest to oldest through it and
may stop as soon as the result shadows everything older (:func:`is_final`).
"""

from __future__ import annotations

from typing import Callable, Optional

MergeFn = Callable[[bytes, bytes], bytes]
PurgeFn = Callable[[bytes, float], bool]
Entry = object  # bytes | float | tuple (or list, from an SSTable)


def combine(older: Entry, newer: Entry, merge: Optional[MergeFn]) -> Entry:
    """The entry that results from ``older`` followed by ``newer``."""
    if merge is None:
        return newer
    cls = newer.__class__
    if cls is float or (cls is not bytes and newer[2]):  # type: ignore[index]
        return newer
    value = newer if cls is bytes else newer[0]  # type: ignore[index]
    ocls = older.__class__
    if ocls is bytes:
        return merge(older, value)  # type: ignore[arg-type]
    if ocls is float:
        return (value, None, True)
    return (merge(older[0], value), None, older[2])  # type: ignore[index]


def is_final(entry: Entry, merge: Optional[MergeFn]) -> bool:
    """True when nothing older can change the outcome for this key."""
    if merge is None:
        return True
    cls = entry.__class__
    return cls is float or (cls is not bytes and entry[2])  # type: ignore[index]


def visible(entry: Entry, now: float) -> Optional[bytes]:
    """The value a reader sees for a resolved entry (None: deleted or expired)."""
    cls = entry.__class__
    if cls is bytes:
        return entry  # type: ignore[return-value]
    if cls is float:
        return None
    expire = entry[1]  # type: ignore[index]
    if expire is not None and expire <= now:
        return None
    return entry[0]  # type: ignore[index]


def deletion_time(entry: Entry, now: float) -> Optional[float]:
    """When this entry became a deletion (tombstone or expired TTL); None if live."""
    cls = entry.__class__
    if cls is float:
        return entry  # type: ignore[return-value]
    if cls is not bytes and entry[1] is not None and entry[1] <= now:  # type: ignore[index]
        return entry[1]  # type: ignore[index]
    return None


def value_of(entry: Entry) -> Optional[bytes]:
    """The stored value bytes, ignoring expiry (None for a tombstone)."""
    cls = entry.__class__
    if cls is bytes:
        return entry  # type: ignore[return-value]
    if cls is float:
        return None
    return entry[0]  # type: ignore[index]

