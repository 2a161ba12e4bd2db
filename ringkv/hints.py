"""Sloppy quorum and hinted-handoff policy, pure: who takes a write, which hints go.

Contract (no IO: no sockets, no time, no os, no asyncio, no module-level random):

- :func:`plan_write` turns a key's preference list, the ring walk from its token, the
  liveness view and the mode into a :class:`WritePlan`: the live home replicas, and for
  each *down* home replica either a *stand-in* (sloppy mode: the first live node
  clockwise beyond the preference list, in the same data center as the replica it stands
  in for, not already a target) or nothing. The stand-in stores the write as a hint
  naming the intended owner, and its durable ack counts as that owner's ack toward W
  (Dynamo's sloppy quorum; see docs/hints.md for why every level, ALL included).
- ``strict`` mode never uses a stand-in: W must be met by live home replicas, else the
  node answers ``Unavailable`` before anything is written (the CP side). ``off`` is strict
  and keeps no hints at all (anti-entropy alone heals replicas).
- :func:`redirects`: hints for a target that was removed from the ring are not left to
  age out but sent to the keys' current replicas (which may include the holder).
- :func:`expired` and :func:`over_bound` are the bounds of a hint store: a hint older than
  ``max_hint_age_s`` is dropped (repair covers it), and a target already holding
  ``max_hints_per_target`` hints takes no more.

The same plan serves the coordinator's bookkeeping: :attr:`WritePlan.missing` names the
down home replicas without a stand-in, for which the coordinator keeps a local hint once
the write went through (it does not count toward W).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

MODES = ("sloppy", "strict", "off")


@dataclass(frozen=True)
class WritePlan:
    """Where one write goes.

    ``live``: home replicas that are alive (the coordinator included), preference order.
    ``stand_ins``: ``(owner, stand_in)`` pairs, one per down home replica that has one.
    ``missing``: down home replicas without a stand-in.
    """

    live: tuple[str, ...]
    stand_ins: tuple[tuple[str, str], ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def stand_in_of(self) -> dict[str, str] | None:
        """Owner -> the node that stores its hint for this write; None if there is none
        (every home replica up: the usual case, on every write)."""
        return dict(self.stand_ins) if self.stand_ins else None

    def counts(self, node: str) -> bool:
        """True if ``node`` (a home replica) will ack: alive, or stood in for."""
        return node in self.live or any(owner == node for owner, _ in self.stand_ins)

    def contacted(self, self_id: str) -> list[str]:
        """The replicas whose acks the quorum waits for: the coordinator first (when it is
        a live home replica), the other live home replicas, then the stood-in owners."""
        first = [self_id] if self_id in self.live else []
        return first + [n for n in self.live if n != self_id] + [o for o, _ in self.stand_ins]


def plan_write(replicas: Sequence[str], walk: Sequence[str], alive: Callable[[str], bool],
               mode: str, self_id: str, dc_of: Mapping[str, str] | None = None) -> WritePlan:
    """The write plan of a key (see the module docstring).

    ``replicas`` is the preference list, ``walk`` every ring node once clockwise from the
    key's token (``Ring.walk``), ``dc_of`` node -> data center (missing = same dc)."""
    live = tuple(r for r in replicas if r == self_id or alive(r))
    down = [r for r in replicas if r not in live]
    if not down:
        return WritePlan(live)
    if mode != "sloppy":
        return WritePlan(live, (), tuple(down))
    dc_of = dc_of or {}
    home = set(replicas)
    used: set[str] = set()
    candidates = [n for n in walk if n not in home and n != self_id and alive(n)]
    stand_ins: list[tuple[str, str]] = []
    missing: list[str] = []
    for owner in down:
        pick = next((c for c in candidates if c not in used
                     and dc_of.get(c) == dc_of.get(owner)), None)
        if pick is None:
            missing.append(owner)
        else:
            used.add(pick)
            stand_ins.append((owner, pick))
    return WritePlan(live, tuple(stand_ins), tuple(missing))


def expired(created: float, now: float, max_age_s: float) -> bool:
    """A hint written at ``created`` (wall seconds) is past its age bound at ``now``."""
    return now - created > max_age_s


def over_bound(pending: int, max_per_target: int) -> bool:
    """A target already holding ``pending`` hints may take no more."""
    return pending >= max_per_target


def keeps_hints(mode: str) -> bool:
    """Whether a node in ``mode`` stores hints at all (coordinator-side or as a stand-in)."""
    return mode != "off"


def redirects(target_state: str | None) -> bool:
    """Whether hints for a target in ``target_state`` (its membership state here) go to
    the keys' current replicas instead: only once it is *removed* (decommissioned,
    removenode'd, replaced), since it will never take them and its ranges have new
    owners (docs/decisions.md D23). A target we do not know (yet) keeps its hints: it
    may be a node that joined and we have not heard of it."""
    return target_state == "removed"


def replay_batches(count: int, batch: int) -> list[tuple[int, int]]:
    """``[start, end)`` index slices that replay ``count`` hints ``batch`` at a time."""
    batch = max(1, batch)
    return [(i, min(i + batch, count)) for i in range(0, count, batch)]


__all__ = ["MODES", "WritePlan", "plan_write", "expired", "over_bound", "keeps_hints",
           "redirects", "replay_batches"]
