"""Quorum coordination, pure: consistency levels, write and read quorum state machines.

Contract (no IO: no sockets, no time, no os, no asyncio, no module-level random):

- :func:`requirement` turns a consistency level (``ONE TWO THREE QUORUM ALL LOCAL_ONE
  LOCAL_QUORUM EACH_QUORUM`` or a positive integer) plus the key's replicas, their data
  centers, the replication factors and the coordinator's data center into a
  :class:`Requirement`: one or more *groups* of replicas, each needing some number of
  replies. Counts come from the replication factors (as in Cassandra), so a ring that
  has fewer nodes than the factor cannot satisfy ``ALL``.
- :func:`check_alive` is asked *before anything is sent*: too few live replicas returns
  ``Unavailable(required, alive)`` and the caller writes nothing.
- :class:`WriteQuorum` and :class:`ReadQuorum` are fed acks, replies, failures and one
  timeout by the shell; each feeding returns the outcome once it is decided (``None``
  before): a :class:`Success`, or an :class:`~ringkv.errors.Unavailable` /
  :class:`~ringkv.errors.Timeout` *value* that the shell raises. Nothing is raised here
  except :class:`~ringkv.errors.InvalidRequest` for a level that makes no sense.
- :class:`ReadQuorum` joins the replies' version sets (``join`` is injected, normally
  ``versions.join``), keeps collecting late replies after the outcome until every
  contacted replica answered or the timeout fired (``complete``), then
  :meth:`ReadQuorum.repairs` names the replicas whose version set differs from the join.

A replica that fails (error reply, broken connection) while the requirement can still be
met is just not counted; once the requirement can no longer be met the outcome is a
``Timeout(required, received)`` right away (the write may have been applied somewhere, so
it is not ``Unavailable``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterable, Mapping, Sequence

from ringkv.errors import InvalidRequest, Timeout, Unavailable

LEVELS = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_ONE", "LOCAL_QUORUM", "EACH_QUORUM")
_FIXED = {"ONE": 1, "TWO": 2, "THREE": 3}
MAX_NUMERIC_LEVEL = 1 << 16  # far above any replication factor; bounds client input

Level = str | int
Outcome = Any  # Success | Unavailable | Timeout


def parse_level(level: object, default: Level = "QUORUM") -> Level:
    """Normalise a client's level: a name (any case), a positive int, or a digit string.
    ``None`` means ``default``. Raises InvalidRequest for anything else."""
    if level is None:
        level = default
    if isinstance(level, bool):
        raise InvalidRequest(f"invalid consistency level {level!r}")
    if isinstance(level, int):
        if not 1 <= level <= MAX_NUMERIC_LEVEL:
            raise InvalidRequest(f"numeric consistency level must be >= 1, got {level}")
        return level
    if isinstance(level, str):
        name = level.strip().upper()
        if name.isdigit():
            return parse_level(int(name))
        if name in LEVELS:
            return name
    raise InvalidRequest(f"invalid consistency level {level!r}; use an integer or one of "
                         + ", ".join(LEVELS))


@dataclass(frozen=True)
class Requirement:
    """Per group of replicas, how many must answer. ``total`` is what errors report."""

    level: Level
    groups: tuple[tuple[tuple[str, ...], int], ...]  # ((member node ids), needed)

    @property
    def total(self) -> int:
        return sum(needed for _, needed in self.groups)

    def members(self) -> tuple[str, ...]:
        """Every replica whose answer counts, in preference order, once."""
        return tuple(self.groups_of)

    @cached_property
    def groups_of(self) -> dict[str, tuple[int, ...]]:
        """Node id -> indexes of the groups it belongs to (computed once per requirement)."""
        out: dict[str, list[int]] = {}
        for i, (group, _) in enumerate(self.groups):
            for node in group:
                out.setdefault(node, []).append(i)
        return {node: tuple(idx) for node, idx in out.items()}


def quorum(n: int) -> int:
    """Majority of n replicas."""
    return n // 2 + 1


def requirement(level: Level, replicas: Sequence[str], dc_of: Mapping[str, str],
                replication: Mapping[str, int], local_dc: str) -> Requirement:
    """The requirement of ``level`` (already parsed) for a key whose preference list is
    ``replicas``. ``dc_of`` maps node id -> data center; ``replication`` dc -> factor."""
    everyone = tuple(replicas)
    n = sum(replication.values())
    if isinstance(level, int):
        return Requirement(level, ((everyone, level),))
    if level in _FIXED:
        return Requirement(level, ((everyone, _FIXED[level]),))
    if level == "QUORUM":
        return Requirement(level, ((everyone, quorum(n)),))
    if level == "ALL":
        return Requirement(level, ((everyone, n),))
    if level in ("LOCAL_ONE", "LOCAL_QUORUM"):
        local = tuple(r for r in everyone if dc_of.get(r) == local_dc)
        rf = replication.get(local_dc, 0)
        needed = 1 if level == "LOCAL_ONE" else quorum(rf)
        return Requirement(level, ((local, max(needed, 1)),))
    if level == "EACH_QUORUM":
        groups = tuple((tuple(r for r in everyone if dc_of.get(r) == dc), quorum(rf))
                       for dc, rf in sorted(replication.items()) if rf > 0)
        return Requirement(level, groups)
    raise InvalidRequest(f"invalid consistency level {level!r}")


def check_alive(req: Requirement, alive: Callable[[str], bool]) -> Unavailable | None:
    """``Unavailable(required, alive)`` if some group has fewer live members than it
    needs, else None. ``alive`` counts the live members that matter to the requirement."""
    if len(req.groups) == 1:  # the common case, without building sets (hot path)
        group, needed = req.groups[0]
        have = 0
        for node in group:
            if alive(node):
                have += 1
                if have >= needed:
                    return None
    live = {node for node in req.members() if alive(node)}
    for group, needed in req.groups:
        have = sum(1 for node in group if node in live)
        if have < needed:
            detail = f"level {req.level}: {have} of {needed} needed replicas alive"
            return Unavailable(req.total, len(live), detail)
    return None


def targets(replicas: Sequence[str], alive: Callable[[str], bool], self_id: str) -> list[str]:
    """The other replicas to contact: the live ones, in preference order."""
    return [r for r in replicas if r != self_id and alive(r)]


def read_targets(req: Requirement, replicas: Sequence[str], alive: Callable[[str], bool],
                 self_id: str, everyone: bool = False) -> list[str]:
    """The replicas a read contacts: itself first when it is a replica, then live replicas
    in preference order until every group of ``req`` can be met (or, with ``everyone``,
    all live replicas: a full read that lets read repair see every replica)."""
    if self_id in replicas:
        live = [self_id]
        live += [r for r in replicas if r != self_id and alive(r)]
    else:
        live = [r for r in replicas if alive(r)]
    if everyone:
        return live
    if len(req.groups) == 1 and req.groups[0][0] == tuple(replicas):  # hot path: one group of all
        return live[:req.groups[0][1]]
    chosen: list[str] = []
    need = [needed for _, needed in req.groups]
    members = [set(group) for group, _ in req.groups]
    for r in live:
        hits = [i for i, m in enumerate(members) if r in m and need[i] > 0]
        if hits:
            chosen.append(r)
            for i in hits:
                need[i] -= 1
        if not any(n > 0 for n in need):
            break
    return chosen


def spare_targets(replicas: Sequence[str], contacted: Iterable[str],
                  alive: Callable[[str], bool]) -> list[str]:
    """Live replicas a read has not contacted yet, in preference order (to replace a
    contacted replica that failed)."""
    seen = set(contacted)
    return [r for r in replicas if r not in seen and alive(r)]


def forward_target(replicas: Sequence[str], alive: Callable[[str], bool],
                   dc_of: Mapping[str, str], local_dc: str) -> str | None:
    """Where a non-replica forwards a write: the first live replica in the local dc, else
    the first live replica, else None (nobody to forward to)."""
    live = [r for r in replicas if alive(r)]
    for r in live:
        if dc_of.get(r) == local_dc:
            return r
    return live[0] if live else None


class Success:
    """The requirement was met. ``value`` is the joined version set for reads.

    A slotted class, not a dataclass: one is made per request, and a frozen dataclass's
    ``__init__`` (``object.__setattr__`` per field) costs several times more. Treat as
    immutable."""

    __slots__ = ("received", "value")

    def __init__(self, received: int, value: Any = None) -> None:
        self.received = received
        self.value = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Success):
            return NotImplemented
        return (self.received, self.value) == (other.received, other.value)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Success(received={self.received!r}, value={self.value!r})"


class _Quorum:
    """Shared counting: which contacted replicas are pending, which acked."""

    def __init__(self, req: Requirement, contacted: Iterable[str]) -> None:
        self.req = req
        self.contacted = list(contacted)
        self.pending = set(self.contacted)
        self.acked: list[str] = []
        self.outcome: Outcome | None = None
        self._have = [0] * len(req.groups)
        self._groups_of = req.groups_of
        self._counted = 0  # acks from replicas that count toward some group
        self.reason: str | None = None  # the first failure's error, named in the outcome

    def _ack(self, node: str) -> bool:
        """Record an ack; False if the node was not pending (duplicate or unknown)."""
        pending = self.pending
        if node not in pending:
            return False
        pending.discard(node)
        self.acked.append(node)
        groups = self._groups_of.get(node)
        if groups:
            self._counted += 1
            have = self._have
            for i in groups:
                have[i] += 1
        return True

    # _satisfied and _possible run on every reply: plain loops, no generator per call.
    def _satisfied(self) -> bool:
        have = self._have
        i = 0
        for _, needed in self.req.groups:
            if have[i] < needed:
                return False
            i += 1
        return True

    def _possible(self) -> bool:
        have, pending = self._have, self.pending
        i = 0
        for group, needed in self.req.groups:
            count = have[i]
            if count < needed:
                for node in group:
                    if node in pending:
                        count += 1
                if count < needed:
                    return False
            i += 1
        return True

    def _decide(self) -> Outcome | None:
        if self.outcome is None:
            if self._satisfied():
                self.outcome = self._success()
            elif not self._possible():
                why = f"; {self.reason}" if self.reason else ""
                self.outcome = Timeout(self.req.total, self._counted,
                                       f"level {self.req.level}: replicas failed{why}")
        return self.outcome

    def _success(self) -> Success:
        return Success(self._counted)

    def add(self, node: str) -> None:
        """Contact one more replica (e.g. in place of one that failed)."""
        if self.outcome is None and node not in self.contacted:
            self.contacted.append(node)
            self.pending.add(node)

    def fail(self, node: str, error: BaseException | None = None) -> Outcome | None:
        """A contacted replica failed (error reply or unreachable); the first ``error``
        given is named in a failed outcome (e.g. a replica whose disk is full)."""
        self.pending.discard(node)
        if error is not None and self.reason is None:
            self.reason = f"{node}: {error}"
        return self._decide()

    def timeout(self) -> Outcome:
        """The request timer fired: the outcome, now decided."""
        if self.outcome is None:
            self._decide()
        if self.outcome is None:
            self.outcome = Timeout(self.req.total, self._counted, f"level {self.req.level}")
        self.pending.clear()
        return self.outcome


class WriteQuorum(_Quorum):
    """Counts write acks (the coordinator's own local write included) toward W."""

    def ack(self, node: str) -> Outcome | None:
        self._ack(node)
        return self._decide()


class ReadQuorum(_Quorum):
    """Counts read replies toward R and joins their version sets.

    ``join(a, b)`` merges two version sets; ``empty`` stands for a replica that has no
    version (reply ``None``); ``equal`` decides whether a replica must be repaired.
    """

    def __init__(self, req: Requirement, contacted: Iterable[str], join: Callable[[Any, Any], Any],
                 empty: Any, equal: Callable[[Any, Any], bool] = lambda a, b: a == b) -> None:
        super().__init__(req, contacted)
        self._join, self._empty, self._equal = join, empty, equal
        self.replies: dict[str, Any] = {}
        self.merged = empty

    def reply(self, node: str, vs: Any) -> Outcome | None:
        """A replica answered with its version set (``None`` = it has none)."""
        if self._ack(node):
            vs = self._empty if vs is None else vs
            self.replies[node] = vs
            self.merged = self._join(self.merged, vs)
        return self._decide()

    def _success(self) -> Success:
        return Success(self._counted, self.merged)

    @property
    def complete(self) -> bool:
        """Every contacted replica answered or failed, or the timer fired."""
        return not self.pending

    def repairs(self) -> list[str]:
        """Replicas that answered with a version set different from the join of all
        replies. Meaningful once :attr:`complete`; before that it may miss some."""
        merged, equal = self.merged, self._equal
        return [node for node, vs in self.replies.items() if not equal(vs, merged)]


__all__ = ["LEVELS", "Requirement", "Success", "WriteQuorum", "ReadQuorum", "parse_level",
           "requirement", "check_alive", "targets", "read_targets", "spare_targets", "forward_target",
           "quorum"]
