"""The nemesis: a seeded schedule of faults, and the code that injects and heals them.

:func:`schedule` is pure: from a seed, a duration and the node count it draws a list of
:class:`Fault` s, one after another (each healed before the next starts), with a warm-up
before the first and a quiet tail after the last so the workload also runs on a healed
cluster. Kinds:

- ``kill``: SIGKILL one node, restart it after ``hold`` seconds (same data dir);
- ``pause``: SIGSTOP one node, SIGCONT after ``hold`` (sockets stay open, nothing answers);
- ``partition``: split the nodes into a minority and a majority and blackhole every route
  between them, both ways (requests across the cut wait for their timeout);
- ``oneway``: ``prohibit`` routes from one group to the other only (the senders fail at once;
  TCP also breaks the other way, since replies cannot come back);
- ``kill+partition`` (long runs): kill one node while another is cut off, so some keys lose
  two of their three replicas and quorum requests fail with Unavailable/Timeout;
- ``join`` / ``decommission`` (only when the store has them; every 5th slot, alternating):
  a new node joins, later a node is decommissioned. :class:`Nemesis` asks the
  runner-supplied hooks to do them; a later fault drawn for a decommissioned node is
  retargeted (deterministically) at a live one.

:class:`Nemesis` runs a schedule against a :class:`~ringkv.chaos.nodes.NodeSet` and its
:class:`~ringkv.chaos.netns.Topology`, logging every action with its time, and
:meth:`Nemesis.heal_all` undoes everything still in force (the runner calls it in ``finally``).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ringkv.chaos.netns import Topology
from ringkv.chaos.nodes import NodeSet

BASIC_KINDS = ("kill", "pause", "partition", "oneway")


@dataclass
class Fault:
    at: float  # seconds after the workload started
    kind: str
    hold: float  # seconds the fault stays in force
    nodes: list[int] = field(default_factory=list)  # killed/paused node(s), or group a
    other: list[int] = field(default_factory=list)  # group b of a partition
    injected_at: float | None = None
    healed_at: float | None = None
    error: str | None = None
    note: str | None = None  # something odd that did not stop the fault (reported)

    def describe(self) -> str:
        names = lambda ids: ",".join(f"n{i + 1}" for i in ids)  # noqa: E731
        if self.kind in ("partition", "oneway"):
            arrow = "-/->" if self.kind == "oneway" else "<-/->"
            return f"{self.kind} {names(self.nodes)} {arrow} {names(self.other)} for {self.hold:.1f}s"
        if self.kind == "kill+partition":
            return (f"kill {names(self.nodes)} + cut {names(self.other)} off "
                    f"for {self.hold:.1f}s")
        who = names(self.nodes) or {"join": "(a new node)", "decommission": "(a seeded node)"}.get(
            self.kind, "")
        return f"{self.kind} {who} for {self.hold:.1f}s"


def schedule(seed: int, duration: float, nodes: int, *, warmup: float = 3.0,
             tail: float = 4.0, hold: tuple[float, float] = (2.0, 5.0),
             gap: tuple[float, float] = (1.0, 3.0), kinds: tuple[str, ...] = BASIC_KINDS,
             membership_changes: bool = False) -> list[Fault]:
    """A seeded list of faults filling ``[warmup, duration - tail]``."""
    rng = random.Random(seed)
    out: list[Fault] = []
    t = warmup
    ids = list(range(nodes))
    order = list(kinds)
    while kinds:
        h = round(rng.uniform(*hold), 2)
        if t + h > duration - tail:
            break
        # every kind once in a shuffled round, then again: all kinds appear in short runs
        if not order:
            order = list(kinds)
        kind = order.pop(rng.randrange(len(order)))
        out.append(_draw(rng, kind, round(t, 2), h, ids))
        t += h + rng.uniform(*gap)
    if membership_changes:  # every 5th slot from the 3rd: join, decommission, join, ...
        for n, k in enumerate(range(2, len(out), 5)):
            out[k] = Fault(out[k].at, "join" if n % 2 == 0 else "decommission", out[k].hold)
    return out


def _draw(rng: random.Random, kind: str, at: float, hold: float, ids: list[int]) -> Fault:
    if kind in ("kill", "pause"):
        return Fault(at, kind, hold, [rng.choice(ids)])
    shuffled = ids[:]
    rng.shuffle(shuffled)
    if kind == "kill+partition":
        return Fault(at, kind, hold, shuffled[:1], shuffled[1:2])
    minority = rng.choice([1, (len(ids) - 1) // 2])
    return Fault(at, kind, hold, sorted(shuffled[:minority]), sorted(shuffled[minority:]))


class Nemesis:
    """Injects and heals faults on real processes and namespaces."""

    def __init__(self, nodes: NodeSet, topology: Topology, *, log: Callable[[str], None] = print,
                 hooks: dict[str, Callable[[Fault], None]] | None = None,
                 restart_wait_s: float = 30.0) -> None:
        self.nodes, self.topology, self.log = nodes, topology, log
        self.hooks = hooks or {}
        self.restart_wait_s = restart_wait_s
        self.t0 = time.monotonic()
        self.done: list[Fault] = []
        self.retired: set[int] = set()  # nodes decommissioned on purpose: stay stopped

    def now(self) -> float:
        return time.monotonic() - self.t0

    def run(self, faults: list[Fault], stop: Callable[[], bool] = lambda: False) -> list[Fault]:
        """Inject each fault at its time, hold it, heal it. Returns the faults as run."""
        self.t0 = time.monotonic()
        for fault in faults:
            if not self._sleep_until(fault.at, stop):
                break
            self.inject(fault)
            self._sleep_until(self.now() + fault.hold, stop)
            self.heal(fault)
        return self.done

    def _sleep_until(self, t: float, stop: Callable[[], bool]) -> bool:
        while self.now() < t:
            if stop():
                return False
            time.sleep(min(0.1, t - self.now()))
        return True

    def inject(self, f: Fault) -> None:
        f.injected_at = round(self.now(), 2)
        if f.kind not in ("join", "decommission") and self.retired & set(f.nodes + f.other):
            self._remap(f)
        self.log(f"[nemesis {f.injected_at:7.2f}s] inject {f.describe()}")
        try:
            if f.kind in ("kill", "kill+partition"):
                for i in f.nodes:
                    self.nodes.kill(i)
            if f.kind == "pause":
                for i in f.nodes:
                    self.nodes.pause(i)
            if f.kind in ("partition", "oneway"):
                self.topology.partition(f.nodes, f.other,
                                        "prohibit" if f.kind == "oneway" else "blackhole",
                                        one_way=f.kind == "oneway")
            if f.kind == "kill+partition":
                rest = [i for i in range(len(self.nodes.nodes)) if i not in f.other]
                self.topology.partition(f.other, rest)
            if f.kind in ("join", "decommission"):
                if f.kind not in self.hooks:
                    raise NotImplementedError(f"no {f.kind} hook")
                self.hooks[f.kind](f)
                self.log(f"[nemesis {self.now():7.2f}s] {f.describe()}: done")
        except Exception as exc:  # noqa: BLE001 - a failed injection is reported, not fatal
            f.error = f"{type(exc).__name__}: {exc}"
            self.log(f"[nemesis] inject failed: {f.error}")
        self.done.append(f)

    def _remap(self, f: Fault) -> None:
        """Aim a fault drawn for a decommissioned node at a live one (deterministically)."""
        live = [n.index for n in self.nodes.nodes if n.index not in self.retired]
        used: list[int] = []
        for group in (f.nodes, f.other):
            for k, i in enumerate(group):
                if i in self.retired or i in used:
                    free = [j for j in live if j not in used and j not in f.nodes + f.other]
                    group[k] = free[i % len(free)] if free else group[k]
                used.append(group[k])
        f.nodes.sort()
        f.other.sort()
        f.note = "retargeted from a decommissioned node"

    def heal(self, f: Fault) -> None:
        """Undo one fault: restart killed nodes, resume paused ones, delete routes."""
        if f.kind in ("partition", "oneway", "kill+partition"):
            self.topology.heal()
        if f.kind == "pause":
            for i in f.nodes:
                self.nodes.resume(i)
        if f.kind in ("kill", "kill+partition"):
            for i in f.nodes:
                self._restart(i)
        f.healed_at = round(self.now(), 2)
        self.log(f"[nemesis {f.healed_at:7.2f}s] healed {f.kind}")

    def _restart(self, i: int) -> None:
        self.nodes.start(i)
        try:
            self.nodes.wait_serving([i], self.restart_wait_s)
        except RuntimeError as exc:
            self.log(f"[nemesis] restart of n{i + 1} failed: {exc}")

    def heal_all(self) -> None:
        """Undo everything still in force: routes, pauses, dead nodes (not decommissioned)."""
        self.topology.heal()
        for node in self.nodes.nodes:
            self.nodes.resume(node.index)
        for node in self.nodes.nodes:
            if not node.running and node.index not in self.retired:
                self.nodes.start(node.index)
        self.nodes.wait_serving([n.index for n in self.nodes.nodes
                                 if n.index not in self.retired], 60.0)


def fault_dicts(faults: list[Fault]) -> list[dict[str, Any]]:
    return [dict(asdict(f), what=f.describe()) for f in faults]


__all__ = ["Fault", "schedule", "Nemesis", "fault_dicts", "BASIC_KINDS"]
