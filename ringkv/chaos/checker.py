"""The chaos checker (pure): was any acknowledged write lost, did reads see writes?

Inputs: the workload history (records of :mod:`ringkv.chaos.workload`) and the final
state: for every key, the values and context a read at ALL returned after healing
(``None`` if that read failed). Values are unique per write, so a value names its write.

An acknowledged write V is *accounted for* when

1. V's value is in the final read of its key (as the value or as a sibling); or
2. some write P of the same key *saw* V and P is itself accounted for, where P saw V if
   - P is a read-modify-write whose read returned V's value (client-side evidence), or
   - P is an acknowledged write whose returned context strictly covers V's returned
     context (server-side evidence, needed for blind writes, which supersede whatever
     the coordinating replica held). A write's context covers its own new dot, which no
     earlier context does, so "P saw V" implies strict domination.

P ranges over every write, acknowledged or not: a write that timed out may have been
applied, and then it may supersede. The recursion must end in the final read; cycles
(two writes claiming each other, as two writes that share one dot would) count as not
accounted. An acknowledged write that is not accounted for is *lost*.

Read-your-writes: a ``ryw`` record says whether a read by the writer, after its write
was acknowledged, returned a context covering the write (``saw``) or not (``missed``).
With W + R > N and ``strict`` hints mode a miss is a violation; in sloppy mode a write
acknowledged by fallback nodes may legitimately be missed, so misses are only counted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ringkv import versions

WRITE_KINDS = ("unique", "blind", "rmw")


@dataclass
class Final:
    """The final read of one key: its values and context, or ``values is None`` if it failed."""

    values: list[str] | None
    context: str | None = None  # hex


@dataclass
class Report:
    ops: int = 0
    writes: int = 0
    acked_writes: int = 0
    unacked_writes: int = 0
    unacked_present: int = 0  # writes that failed at the client but were applied anyway
    lost: list[dict] = field(default_factory=list)
    unverified: list[dict] = field(default_factory=list)  # acked writes whose key could not be read
    ryw_checks: int = 0
    ryw_missed: list[dict] = field(default_factory=list)
    ryw_enforced: bool = False
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def lost_writes(self) -> int:
        return len(self.lost)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.unverified and not (
            self.ryw_enforced and self.ryw_missed)

    def summary(self) -> dict[str, Any]:
        return {"ops": self.ops, "writes": self.writes, "acked_writes": self.acked_writes,
                "unacked_writes": self.unacked_writes, "unacked_present": self.unacked_present,
                "lost_writes": self.lost_writes, "unverified_writes": len(self.unverified),
                "ryw_checks": self.ryw_checks, "ryw_missed": len(self.ryw_missed),
                "ryw_enforced": self.ryw_enforced, "statuses": dict(sorted(self.statuses.items()))}


def _vv(hexctx: str | None) -> dict[str, int] | None:
    return versions.decode_context(bytes.fromhex(hexctx)) if hexctx else None


def _strictly_covers(a: dict[str, int], b: dict[str, int]) -> bool:
    return versions.vv_descends(a, b) and a != b


class _Key:
    """Every write of one key and its final read; which writes are accounted for.

    Accounted-for is a least fixpoint, found backwards from the final read: start with the
    writes whose value is there, then add every write that an accounted write saw. A cycle
    not connected to the final read is never reached."""

    def __init__(self, writes: list[dict], final: Final | None) -> None:
        self.writes = writes
        self.final = set(final.values) if final is not None and final.values is not None else None
        self.vv = [_vv(w["ctx_out"]) if w["status"] == "ok" else None for w in writes]
        self.accounted: set[int] = set()
        if self.final is not None:
            self._close()

    def _close(self) -> None:
        assert self.final is not None
        todo = [i for i, w in enumerate(self.writes) if w["value"] in self.final]
        self.accounted.update(todo)
        index = {w["value"]: i for i, w in enumerate(self.writes)}
        # Writes with a context not accounted for yet: the only ones a context can still
        # add, so each accounted write compares its context with fewer and fewer of them
        # (the same fixpoint as comparing with every write, without the n^2 comparisons).
        unseen = [i for i, vv in enumerate(self.vv) if vv is not None and i not in self.accounted]
        while todo:
            j = todo.pop()
            for i in self._seen_by(j, index, unseen):
                if i not in self.accounted:
                    self.accounted.add(i)
                    todo.append(i)
            if unseen:
                unseen = [i for i in unseen if i not in self.accounted]

    def _seen_by(self, j: int, index: dict[str, int], candidates: list[int]) -> list[int]:
        """Writes among ``candidates`` (plus rmw read evidence) that write ``j`` saw."""
        p, vv_j = self.writes[j], self.vv[j]
        out = [index[v] for v in p["seen"] if v in index] if p["kind"] == "rmw" else []
        if vv_j is not None:
            vvs, accounted = self.vv, self.accounted
            out += [i for i in candidates
                    if i != j and i not in accounted and _strictly_covers(vv_j, vvs[i])]
        return out


def check(history: list[dict], final: dict[str, Final], *, ryw_enforced: bool = False) -> Report:
    """Judge a run: lost writes, unverified writes, read-your-writes misses."""
    rep = Report(ops=len(history), ryw_enforced=ryw_enforced)
    by_key: dict[str, list[dict]] = defaultdict(list)
    for op in history:
        rep.statuses[f"{op['kind']}:{op['status']}"] = rep.statuses.get(
            f"{op['kind']}:{op['status']}", 0) + 1
        if op["kind"] in WRITE_KINDS:
            by_key[op["key"]].append(op)
        elif op["kind"] == "ryw" and op["status"] in ("saw", "missed"):
            rep.ryw_checks += 1
            if op["status"] == "missed":
                rep.ryw_missed.append(op)
    for key in sorted(by_key):
        _check_key(rep, by_key[key], final.get(key))
    return rep


def _check_key(rep: Report, writes: list[dict], final: Final | None) -> None:
    k = _Key(writes, final)
    for i, w in enumerate(writes):
        rep.writes += 1
        acked = w["status"] == "ok"
        rep.acked_writes += acked
        rep.unacked_writes += not acked
        if k.final is None:
            if acked:
                rep.unverified.append(w)
            continue
        if not acked:
            rep.unacked_present += w["value"] in k.final
        elif i not in k.accounted:
            rep.lost.append(dict(w, final=sorted(k.final)))


def keys_of(history: list[dict]) -> list[str]:
    """Every key a write touched, sorted."""
    return sorted({op["key"] for op in history if op["kind"] in WRITE_KINDS})


__all__ = ["Final", "Report", "check", "keys_of"]
