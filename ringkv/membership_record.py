"""The membership record, its order, and its wire encoding (see ringkv/membership.py).

Invariants.
- ``Member.version() = (generation, removed, heartbeat)`` orders the records of one node;
  ``order_key()`` extends it to a total order, so taking the larger of two records is a
  join (commutative, associative, idempotent).
- Static fields (tokens, addresses, dc, rack) never change within a generation, which is
  what lets gossip send *compact* entries (id, gen, hb, state, age, down) and the *full*
  entry only to nodes that lack it.
- Entries are maps with short keys of str/int/float/bool/lists (msgpack-friendly);
  ``parse_message`` validates a whole message and raises ``ProtocolError`` before the
  state machine applies any of it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

from ringkv.errors import ProtocolError
from ringkv.ring import NodeInfo

JOINING, NORMAL, LEAVING, DOWN, REMOVED = "joining", "normal", "leaving", "down", "removed"
STATES = (JOINING, NORMAL, LEAVING, DOWN, REMOVED)
PUBLISHED_STATES = (JOINING, NORMAL, LEAVING, REMOVED)  # what a record may carry
RING_STATES = (JOINING, NORMAL, LEAVING)  # own tokens; also the ones we failure-detect
KINDS = ("gossip", "gossip_ack", "gossip_full", "ping", "ping_ack", "probe_req", "probe_ack")
MAX_AGE = 1e9  # seconds: the age sent for a record with no liveness evidence (restored)


@dataclass(frozen=True)
class Member:
    """One node as its owner published it. Field names match ``ring.NodeInfo``."""

    node_id: str
    host: str = "127.0.0.1"
    port: int = 0
    http_port: int = 0
    dc: str = "dc1"
    rack: str = "rack1"
    tokens: tuple[int, ...] = ()
    state: str = JOINING  # one of PUBLISHED_STATES in records; members() may overlay DOWN
    generation: int = 0  # incarnation: node.py sets it at start (e.g. start time), must grow
    heartbeat: int = 0  # bumped by the owner on every tick and state change

    def version(self) -> tuple[int, int, int]:
        """Total order of records of one node: newer generation, then removed, then heartbeat."""
        return (self.generation, int(self.state == REMOVED), self.heartbeat)

    def order_key(self) -> tuple[Any, ...]:
        """``version()`` then the content: ties cannot happen between honest records (the
        owner bumps its heartbeat on every change) but a total order keeps merging a
        join even for inconsistent input."""
        return (self.version(), self.state, self.host, self.port, self.http_port, self.dc,
                self.rack, self.tokens)

    def node_info(self) -> NodeInfo:
        """The ring's view of this member."""
        return NodeInfo(self.node_id, self.tokens, self.dc, self.rack, self.host, self.port,
                        self.http_port)


class Entry(NamedTuple):
    """A decoded entry. Compact ones (``full`` False) carry default static fields."""

    member: Member
    age: float
    down: bool
    full: bool


def encode_entry(m: Member, age: float, down: bool, full: bool = True) -> dict[str, Any]:
    """One member as a msgpack-friendly map (short keys: the list goes out every tick)."""
    entry = {"id": m.node_id, "gen": m.generation, "hb": m.heartbeat, "state": m.state,
             "age": min(max(0.0, float(age)), MAX_AGE), "down": down}
    if full:
        entry.update(tokens=list(m.tokens), dc=m.dc, rack=m.rack, host=m.host, port=m.port,
                     http=m.http_port)
    return entry


def parse_message(kind: str, body: Any) -> tuple[Entry, list[Entry]]:
    """Validate a message: return its decoded sender entry (full) and the entries it
    carries, full ones first so that compact ones can refer to them."""
    if kind not in KINDS:
        raise ProtocolError(f"unknown membership message {kind!r}")
    if not isinstance(body, dict):
        raise ProtocolError(f"{kind}: body is not a map")
    sender = decode_entry(body.get("from"))
    if not sender.full:
        raise ProtocolError(f"{kind}: sender entry is not full")
    entries: list[Any] = []
    if kind in ("gossip", "gossip_ack", "gossip_full"):
        entries = body.get("members")  # type: ignore[assignment]
        full, want = body.get("full", []), body.get("want", [])
        if not (isinstance(entries, list) and isinstance(full, list) and isinstance(want, list)):
            raise ProtocolError(f"{kind}: members, full or want is not a list")
        if not all(isinstance(i, str) for i in want):
            raise ProtocolError(f"{kind}: want holds a non-string")
        entries = full + entries
    elif kind == "probe_req" and not isinstance(body.get("target"), str):
        raise ProtocolError("probe_req: target is not a string")
    elif kind == "probe_ack" and body.get("entry") is not None:
        entries = [body["entry"]]
    elif kind in ("ping", "ping_ack") and not isinstance(body.get("origin"), (str, type(None))):
        raise ProtocolError(f"{kind}: origin is not a string")
    return sender, [decode_entry(raw) for raw in entries]


def decode_entry(raw: Any) -> Entry:
    """Parse a full or compact entry; raise ProtocolError on anything malformed."""
    if not isinstance(raw, dict):
        raise ProtocolError("membership entry is not a map")
    try:
        # exact-type fast paths; anything else goes through _typed (same checks, same errors)
        v = raw["id"]
        node_id = v if type(v) is str else _typed(raw, "id", str)
        v = raw["state"]
        state = v if type(v) is str else _typed(raw, "state", str)
        v = raw["gen"]
        generation = v if type(v) is int else _typed(raw, "gen", int)
        v = raw["hb"]
        heartbeat = v if type(v) is int else _typed(raw, "hb", int)
        v = raw["age"]
        age = float(v if type(v) is float or type(v) is int else _typed(raw, "age", (int, float)))
        v = raw["down"]
        down = v if type(v) is bool else _typed(raw, "down", bool)
        full = "tokens" in raw
        if full:  # validated in the same order as before; one Member, no dataclasses.replace
            tokens, host = _tokens(raw["tokens"]), _typed(raw, "host", str)
            port, http_port = _typed(raw, "port", int), _typed(raw, "http", int)
            dc, rack = _typed(raw, "dc", str), _typed(raw, "rack", str)
            member = _full(node_id, host, port, http_port, dc, rack, tokens, state,
                           generation, heartbeat)
        else:
            member = _compact(node_id, state, generation, heartbeat)
    except KeyError as exc:
        raise ProtocolError(f"membership entry lacks {exc}") from None
    if member.state not in PUBLISHED_STATES or not member.node_id:
        raise ProtocolError(f"membership entry has bad id or state {member.state!r}")
    return Entry(member, max(0.0, age), down, full)


# Decoded Members are memoised (they are immutable): every node's digest repeats each
# record to several peers per tick, its own full record heads every message it sends in
# that tick, and building a frozen dataclass costs more than decoding the rest of the entry.
@functools.lru_cache(maxsize=4096)
def _compact(node_id: str, state: str, generation: int, heartbeat: int) -> Member:
    return Member(node_id=node_id, state=state, generation=generation, heartbeat=heartbeat)


@functools.lru_cache(maxsize=1024)
def _full(node_id: str, host: str, port: int, http_port: int, dc: str, rack: str,
          tokens: tuple[int, ...], state: str, generation: int, heartbeat: int) -> Member:
    return Member(node_id, host, port, http_port, dc, rack, tokens, state, generation, heartbeat)


def _tokens(raw: Any) -> tuple[int, ...]:
    # every element's exact type is int (so no bool), without a generator per entry
    if not isinstance(raw, (list, tuple)) or (raw and set(map(type, raw)) != _INT_ONLY):
        raise ProtocolError("membership entry field tokens is not a list of ints")
    return tuple(raw)


_INT_ONLY = {int}


def _typed(raw: Any, key: str | None, kind: Any) -> Any:
    value = raw if key is None else raw[key]
    if type(value) is kind and kind is not int:  # fast path: exact type (not an int: bool)
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"membership entry field {key or 'token'} has type {type(value).__name__}")
    return value


__all__ = ["Member", "Entry", "encode_entry", "decode_entry", "parse_message", "KINDS",
           "STATES", "PUBLISHED_STATES", "RING_STATES", "JOINING", "NORMAL", "LEAVING",
           "DOWN", "REMOVED"]
