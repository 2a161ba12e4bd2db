"""Dotted version vector sets: the versions of one key, with their causal context (pure).

After Preguiça, Baquero, Almeida, Fonte, Gonçalves, "Dotted Version Vectors: Logical
Clocks for Optimistic Replication" (2010) and Riak's ``dvvset``. A ``VersionSet`` is

- ``vv``: the causal context, node id -> counter. ``vv[n] = c`` means every write
  coordinated by ``n`` with counter ``1..c`` has been seen (dots are minted in order by the
  coordinating replica, which reads its own state first).
- ``siblings``: the concurrent versions still alive, each with its *dot* ``(node,
  counter)`` naming the one write that made it, a value (``None`` is a tombstone) and the
  caller-given timestamp (used for tombstone purging and optional last-write-wins).

Invariants (every function keeps them; ``decode`` checks them):
- every sibling's dot is covered by ``vv`` (``vv[node] >= counter``); dots are unique.
  Callers must keep them unique across time too: a node id never mints the same dot
  twice, so a node that lost its data must come back under a new id (Riak changes the
  vnode id for this reason); two different siblings with one dot would both be dropped;
- ``siblings`` is a tuple sorted by dot, so equal sets are equal tuples and encode to
  equal bytes;
- a ``VersionSet`` is never mutated: ``vv`` is a dict for speed, but nobody writes to it
  (``context`` hands out copies).

``join`` is associative, commutative and idempotent, so replicas, hints, read repair and
the storage engine's merge may apply versions in any order, any number of times. Siblings
never outnumber the truly concurrent writes: a write drops exactly the siblings its
context has seen.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import msgpack

from ringkv.errors import Corruption, InvalidRequest

VersionVector = dict[str, int]
FORMAT = 1  # first element of every encoded set / context; bump on a layout change
MAX_COUNTER = (1 << 63) - 1  # largest counter a stored set may hold
MAX_CONTEXT_COUNTER = 1 << 62  # largest a client context may claim: leaves 2**62 writes of room


class Sibling(NamedTuple):
    """One live version: its dot (node, counter), value (None = tombstone), timestamp."""

    node: str
    counter: int
    value: bytes | None
    timestamp: float


class VersionSet(NamedTuple):
    """Causal context plus the concurrent siblings. Treat as immutable."""

    vv: VersionVector
    siblings: tuple[Sibling, ...]


EMPTY = VersionSet({}, ())

_new_set = tuple.__new__  # builds a VersionSet without NamedTuple.__new__'s Python-level call


def update(local: VersionSet, context: VersionVector, node_id: str, value: bytes | None,
           timestamp: float, floor: int = 0) -> VersionSet:
    """The coordinator's new version: ``value`` written by a client who had read ``context``.

    The new dot is ``(node_id, max(local.vv[node_id], context[node_id], floor) + 1)``; the
    max guards against a context from before this node lost state, and ``floor`` (the
    node's incarnation floor, ringkv/incarnation.py) against a local copy lost in a crash
    before it was durable. Local siblings the context has seen are replaced; the rest stay
    as concurrent siblings."""
    if timestamp != timestamp:
        raise ValueError("timestamp is NaN")
    lvv = local[0]
    counter = max(lvv.get(node_id, 0), context.get(node_id, 0), floor) + 1
    if counter > MAX_COUNTER:
        raise InvalidRequest(f"version counter of {node_id!r} exhausted")
    kept = [s for s in local[1] if context.get(s[0], 0) < s[1]]
    kept.append(_new_set(Sibling, (node_id, counter, value, float(timestamp))))
    if len(kept) > 1:
        kept.sort()
    vv = _max_vv(lvv, context)
    vv[node_id] = counter
    return _new_set(VersionSet, (vv, tuple(kept)))


def join(a: VersionSet, b: VersionSet) -> VersionSet:
    """The least upper bound of two sets: the siblings neither side has superseded.

    A sibling survives if both sides hold it, or one holds it and the other's vv has not
    seen it. The vv is the pointwise max."""
    if a is b:
        return a
    avv, asib = a
    bvv, bsib = b
    out = [s for s in asib if bvv.get(s[0], 0) < s[1] or s in bsib]
    from_b = [s for s in bsib if avv.get(s[0], 0) < s[1]]
    if from_b:
        out += from_b
        out.sort()
    return _new_set(VersionSet, (_max_vv(avv, bvv), tuple(out)))


def _max_vv(a: VersionVector, b: VersionVector) -> VersionVector:
    """Pointwise max of two version vectors, as a new dict."""
    if len(a) < len(b):
        a, b = b, a
    out = dict(a)
    for node, counter in b.items():
        if counter > out.get(node, 0):
            out[node] = counter
    return out


def values(vs: VersionSet) -> list[bytes]:
    """The live sibling values, in dot order (tombstones left out)."""
    return [s[2] for s in vs[1] if s[2] is not None]


def context(vs: VersionSet) -> VersionVector:
    """The causal context to hand a reader (a copy)."""
    return dict(vs[0])


def siblings(vs: VersionSet) -> tuple[Sibling, ...]:
    """Every sibling, tombstones included, in dot order."""
    return vs[1]


def sibling_count(vs: VersionSet) -> int:
    """How many siblings (tombstones included) the set holds."""
    return len(vs[1])


def is_deleted(vs: VersionSet) -> bool:
    """True iff the set holds siblings and all are tombstones (a never-written key is not)."""
    return bool(vs[1]) and all(s[2] is None for s in vs[1])


def latest(vs: VersionSet) -> Sibling | None:
    """The sibling with the greatest (timestamp, dot): a last-write-wins pick, or None."""
    return max(vs[1], key=lambda s: (s[3], s[0], s[1]), default=None)


def descends(a: VersionSet, b: VersionSet) -> bool:
    """True iff ``a`` has seen every write ``b`` has (``a.vv >= b.vv`` pointwise)."""
    return vv_descends(a[0], b[0])


def vv_descends(a: VersionVector, b: VersionVector) -> bool:
    """True iff version vector ``a`` covers ``b``."""
    get = a.get
    for node, counter in b.items():
        if not get(node, 0) >= counter:
            return False
    return True


def is_stale(replica: VersionSet | None, merged: VersionSet) -> bool:
    """Whether a replica that answered ``replica`` needs ``merged`` written to it (read repair).

    ``merged`` is the join of every reply, so it descends the replica's set; they differ
    exactly when the replica misses something."""
    if replica is None:
        return merged != EMPTY
    return replica != merged


# -- encoding ----------------------------------------------------------------------------
# A set is the msgpack array [FORMAT, [node, counter, ...], [node, counter, value, ts, ...]]
# with vv entries sorted by node and siblings by dot, so equal sets give equal bytes.
# Flat arrays are smaller and faster to pack than nested ones.


def encode(vs: VersionSet, pack: Callable[[Any], bytes] = msgpack.packb) -> bytes:
    """Compact, deterministic bytes for a set. ``pack``: ``msgpack.packb`` or the ``pack``
    of a ``msgpack.Packer`` the caller reuses (packb makes and frees a Packer on every
    call; a Packer is not thread-safe, so only its own thread may pass it)."""
    sibs = vs[1]
    if len(sibs) == 1:  # one sibling: the common case, without a loop
        flat_sib: Any = sibs[0]  # msgpack packs a tuple as the array it is
    else:
        flat_sib = []
        for s in sibs:
            flat_sib += s
    return pack([FORMAT, _flat_vv(vs[0]), flat_sib])


def _flat_vv(vv: VersionVector) -> Any:
    """[node, counter, ...] sorted by node (a tuple for one writer, the common case)."""
    if len(vv) == 1:
        return (*vv.items(),)[0]
    flat: list[Any] = []
    for node in sorted(vv):
        flat += (node, vv[node])
    return flat


def decode(data: bytes) -> VersionSet:
    """The set encoded in ``data``; raises InvalidRequest if it is not a well-formed set."""
    flat_vv, flat_sib = _unpack(data)
    vv = _vv_from_flat(flat_vv)
    return _new_set(VersionSet, (vv, _siblings_from_flat(flat_sib, vv)))


def check(data: bytes) -> None:
    """Raise InvalidRequest where :func:`decode` would, without building the set (its
    dict and a tuple per sibling): how a replica refuses a malformed set before it reaches
    the engine, on every replica write (``bench/version_merge.py`` times both)."""
    flat_vv, flat_sib = _unpack(data)
    _check_siblings(flat_sib, _vv_from_flat(flat_vv))


def _unpack(data: bytes) -> tuple[list[Any], list[Any]]:
    """The flat vv and sibling arrays of an encoded set, its header checked."""
    try:
        fmt, flat_vv, flat_sib = msgpack.unpackb(data)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise InvalidRequest(f"malformed version set: {exc.__class__.__name__}") from None
    if type(fmt) is not int or fmt != FORMAT or type(flat_vv) is not list or type(flat_sib) is not list:
        raise InvalidRequest("malformed version set: bad header")
    return flat_vv, flat_sib


def live_values(data: bytes) -> list[bytes]:
    """``values(decode(data))`` without building the set: the live values of an encoded
    set, for readers that need no context (a RESP GET). Checks the header and the value
    fields it returns; raises InvalidRequest like ``decode`` for what it finds malformed."""
    flat_sib = _unpack(data)[1]
    if len(flat_sib) % 4:
        raise InvalidRequest("malformed version set: bad header")
    if len(flat_sib) == 4:  # one sibling: the common case
        v = flat_sib[2]
        if v is None:
            return []
        if type(v) is not bytes:
            raise InvalidRequest("malformed sibling")
        return [v]
    out = []
    for v in flat_sib[2::4]:
        if v is not None:
            if type(v) is not bytes:
                raise InvalidRequest("malformed sibling")
            out.append(v)
    return out


def _vv_from_flat(flat: list[Any], limit: int = MAX_COUNTER) -> VersionVector:
    """Rebuild a vv from [node, counter, ...], checking types, order and ``0 < counter <= limit``."""
    if len(flat) % 2:
        raise InvalidRequest("malformed version vector: odd length")
    vv: VersionVector = {}
    prev = None
    for k in range(0, len(flat), 2):
        node, counter = flat[k], flat[k + 1]
        if type(node) is not str or type(counter) is not int or not 0 < counter <= limit:
            raise InvalidRequest("malformed version vector entry")
        if prev is not None and node <= prev:
            raise InvalidRequest("malformed version vector: not sorted")
        vv[node] = counter
        prev = node
    return vv


def _siblings_from_flat(flat: list[Any], vv: VersionVector) -> tuple[Sibling, ...]:
    """Rebuild siblings from [node, counter, value, ts, ...], checking the invariants."""
    _check_siblings(flat, vv)
    if len(flat) == 4:  # one sibling: the common case
        return (_new_set(Sibling, flat),)
    return tuple([_new_set(Sibling, flat[k:k + 4]) for k in range(0, len(flat), 4)])


def _check_siblings(flat: list[Any], vv: VersionVector) -> None:
    """Raise InvalidRequest unless ``flat`` is [node, counter, value, ts, ...] with every
    dot covered by ``vv``, values bytes or None, timestamps floats, dots sorted and unique."""
    n = len(flat)
    if n % 4:
        raise InvalidRequest("malformed siblings: length not a multiple of 4")
    get = vv.get
    prev_node: Any = None
    prev_counter = 0
    for k in range(0, n, 4):
        node, counter, value = flat[k], flat[k + 1], flat[k + 2]
        if (type(node) is not str or type(counter) is not int or not 0 < counter <= get(node, 0)
                or not (value is None or type(value) is bytes) or type(flat[k + 3]) is not float):
            raise InvalidRequest("malformed sibling")
        if prev_node is not None and (node < prev_node or (node == prev_node
                                                           and counter <= prev_counter)):
            raise InvalidRequest("malformed siblings: not sorted by dot")
        prev_node, prev_counter = node, counter


def encode_context(vv: VersionVector, pack: Callable[[Any], bytes] = msgpack.packb) -> bytes:
    """The opaque context token handed to clients (``pack`` as for :func:`encode`)."""
    return pack([FORMAT, _flat_vv(vv)])


def decode_context(data: bytes) -> VersionVector:
    """The vv inside a client's context token; raises InvalidRequest for anything else."""
    try:
        fmt, flat = msgpack.unpackb(data)
    except Exception as exc:
        raise InvalidRequest(f"malformed context: {exc.__class__.__name__}") from None
    if type(fmt) is not int or fmt != FORMAT or type(flat) is not list:
        raise InvalidRequest("malformed context: bad header")
    return _vv_from_flat(flat, MAX_CONTEXT_COUNTER)


# -- storage engine hooks ------------------------------------------------------------------
# Stored bytes were written by this module, so a decode failure there means the data is
# damaged: these hooks raise Corruption (the engine may re-raise it with its path/offset).


def merge_bytes(older: bytes, newer: bytes) -> bytes:
    """The engine's MergeFn: ``encode(join(decode(older), decode(newer)))``.

    The common cases are answered from the flat arrays, without building either set: the
    same bytes (a re-delivery), and one side *superseding* the other (see
    :func:`_supersedes`: the next write of a key, minted by a coordinator that had read
    the replica's version). Then the join is that side, and since encoding is canonical
    (REQUIRES: both came from :func:`encode`) its bytes are the answer. A replica merges
    every copy it receives into its memtable entry, so this is on every replica write:
    ~3 us against ~9 us for the full join (decode twice, join, encode;
    ``bench/version_merge.py``, docs/decisions.md D31)."""
    if older == newer:
        return newer  # join is idempotent, and this is the common re-delivery case
    try:
        o_vv, o_sib = _unpack(older)
        n_vv, n_sib = _unpack(newer)
        ovv, nvv = _vv_from_flat(o_vv), _vv_from_flat(n_vv)
        if _supersedes(nvv, n_sib, ovv):
            return newer
        if _supersedes(ovv, o_sib, nvv):
            return older
        a = _new_set(VersionSet, (ovv, _siblings_from_flat(o_sib, ovv)))  # decode's last step
        b = _new_set(VersionSet, (nvv, _siblings_from_flat(n_sib, nvv)))
    except InvalidRequest as exc:
        raise Corruption("<version set>", 0, exc.message) from None
    return encode(join(a, b))


def _supersedes(vv: VersionVector, flat_sib: list[Any], other: VersionVector) -> bool:
    """Whether a set (its ``vv`` and flat siblings) joined with one whose vv is ``other``
    is itself: ``vv`` has seen everything ``other`` has (so every sibling of the other
    side is superseded or held here too), and ``other`` has seen none of this set's
    siblings (so none of them is dropped as superseded by the other side). A malformed
    sibling dot answers False and is left to the full join, which reports it (the other
    sibling fields are not checked here: a replica checks what it receives with
    ``decode`` before it is stored, and stored blocks carry a checksum)."""
    if len(flat_sib) % 4:
        return False
    get = vv.get
    for node, counter in other.items():
        if get(node, 0) < counter:
            return False
    get = other.get
    for k in range(0, len(flat_sib), 4):
        node, counter = flat_sib[k], flat_sib[k + 1]
        if type(node) is not str or type(counter) is not int or get(node, 0) >= counter:
            return False
    return True


_HEAD = b"\x93" + msgpack.packb(FORMAT)  # every encoded set starts [FORMAT, ...
_NO_SIBLINGS_END = b"\x90"  # ... and one with no siblings ends with an empty array
_NIL = b"\xc0"  # msgpack None: how a tombstone's value is stored


def purgeable(data: bytes, now: float, grace: float) -> bool:
    """Whether compaction may drop this value: only tombstones, all written by ``now - grace``.

    (A set with no siblings at all holds nothing and is purgeable too.)

    Compaction asks this of every entry it rewrites, and nearly all of them are live, so the
    common answer comes from the bytes: a set whose encoding holds no msgpack nil has no
    tombstone (a tombstone's value is stored as nil) and, unless it ends with the empty
    sibling array, has a sibling, so it is not purgeable. Everything else is decoded. The
    shortcut checks only the header: a body damaged on disk is caught by the block's crc32c
    before compaction sees it, and a live entry kept is the safe side of a wrong answer."""
    if data[:2] == _HEAD and _NIL not in data and not data.endswith(_NO_SIBLINGS_END):
        return False
    cutoff = now - grace
    return all(s[2] is None and s[3] <= cutoff for s in _stored(data)[1])


def vv_of_stored(data: bytes) -> VersionVector:
    """The version vector of a stored set, without rebuilding its siblings (a blind write
    supersedes them all and needs only this); raises Corruption like the other hooks."""
    try:
        return _vv_from_flat(_unpack(data)[0])
    except InvalidRequest as exc:
        raise Corruption("<version set>", 0, exc.message) from None


def _stored(data: bytes) -> VersionSet:
    try:
        return decode(data)
    except InvalidRequest as exc:
        raise Corruption("<version set>", 0, exc.message) from None


__all__ = ["VersionVector", "Sibling", "VersionSet", "EMPTY", "FORMAT", "update", "join",
           "values", "context", "siblings", "sibling_count", "is_deleted", "latest",
           "descends", "vv_descends", "is_stale", "encode", "decode", "check", "live_values",
           "encode_context", "decode_context", "merge_bytes", "purgeable", "vv_of_stored"]
