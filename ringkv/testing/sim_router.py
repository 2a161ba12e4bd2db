"""An in-memory, seeded network that runs many pure state machines in virtual time.

What it is. ``SimRouter`` drives machines that follow the membership shape: they have
``tick(now)`` and ``on_message(kind, body, now)``, return effects, and some effects are
``Send(node_id, host, port, kind, body)``. The router calls each machine's ``tick`` every
``interval`` seconds (each node at its own seeded phase), delivers sends after a random
delay, drops them with a per-link loss probability, blocks links, and stops/restarts nodes.
Every other effect is recorded in ``events`` with its time, for checkers.

Invariants.
- Deterministic: one ``random.Random(seed)`` decides phases, delays and losses; the event
  queue orders ties by insertion sequence. Same seed, same history.
- Bodies cross a msgpack round trip by default, so a machine that sends something that
  cannot go on the wire fails here, and receivers see lists where senders had tuples.
- Time only moves forward, through ``run_until``; ``clock`` (a FakeClock) shows it.
- A send to a stopped node or over a blocked link is dropped and, like a refused TCP
  connection, reported back to the sender through ``on_unreachable(node_id, now)``; random
  loss is silent.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack

from ringkv.testing.fake_clock import FakeClock


@dataclass
class RouterStats:
    """Counters of what happened on the simulated network."""

    sent: int = 0
    delivered: int = 0
    lost: int = 0
    refused: int = 0
    bytes: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class SimRouter:
    """Virtual-time network and scheduler for effect-returning state machines."""

    def __init__(self, seed: int = 0, *, interval: float = 1.0, loss: float = 0.0,
                 delay: tuple[float, float] = (0.001, 0.020), wire_check: bool = True,
                 start: float = 1_000.0) -> None:
        self.rng = random.Random(seed)
        self.clock = FakeClock(start)
        self.interval = interval
        self.loss = loss  # default loss probability of every link
        self.delay = delay
        self.wire_check = wire_check
        self.stats = RouterStats()
        self.events: list[tuple[float, Any]] = []  # (time, non-Send effect)
        self.on_event: Callable[[float, Any], None] | None = None
        self._machines: dict[str, Any] = {}
        self._addresses: dict[tuple[str, int], str] = {}
        self._blocked: set[tuple[str, str]] = set()
        self._link_loss: dict[tuple[str, str], float] = {}
        self._queue: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._seq = 0
        self._epoch: dict[str, int] = {}  # bumps on stop/restart, so old ticks are ignored

    @property
    def now(self) -> float:
        return self.clock.now()

    # ----- topology ------------------------------------------------------------------

    def add(self, node_id: str, host: str, port: int, machine: Any) -> None:
        """Start a machine at an address; its first tick comes within one interval."""
        self._machines[node_id] = machine
        self._addresses[(host, port)] = node_id
        self._epoch[node_id] = self._epoch.get(node_id, 0) + 1
        phase = self.rng.uniform(0, self.interval)
        self._push(self.now + phase, "tick", (node_id, self._epoch[node_id]))

    def stop(self, node_id: str) -> None:
        """Crash a node: it stops ticking and messages to it are refused."""
        self._machines.pop(node_id, None)
        self._epoch[node_id] = self._epoch.get(node_id, 0) + 1

    def running(self) -> list[str]:
        return sorted(self._machines)

    def machine(self, node_id: str) -> Any:
        return self._machines[node_id]

    def block(self, a: str, b: str, both: bool = True) -> None:
        """Messages from a to b (and b to a if ``both``) are refused."""
        self._blocked.add((a, b))
        if both:
            self._blocked.add((b, a))

    def unblock(self, a: str, b: str) -> None:
        self._blocked.discard((a, b))
        self._blocked.discard((b, a))

    def partition(self, *groups: list[str]) -> None:
        """Block every link between nodes of different groups."""
        for i, g in enumerate(groups):
            for h in groups[i + 1:]:
                for a in g:
                    for b in h:
                        self.block(a, b)

    def heal(self) -> None:
        self._blocked.clear()

    def set_link_loss(self, a: str, b: str, loss: float, both: bool = True) -> None:
        self._link_loss[(a, b)] = loss
        if both:
            self._link_loss[(b, a)] = loss

    # ----- running -------------------------------------------------------------------

    def run_until(self, until: float, stop_when: Callable[[], bool] | None = None) -> bool:
        """Process events up to time ``until``; return True if ``stop_when`` became true."""
        while self._queue and self._queue[0][0] <= until:
            when, _, kind, args = heapq.heappop(self._queue)
            self.clock.set(max(when, self.now))
            getattr(self, "_do_" + kind)(*args)
            if stop_when is not None and stop_when():
                return True
        self.clock.set(max(until, self.now))
        return stop_when() if stop_when is not None else False

    def run_for(self, seconds: float, stop_when: Callable[[], bool] | None = None) -> bool:
        return self.run_until(self.now + seconds, stop_when)

    def _push(self, when: float, kind: str, args: tuple[Any, ...]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (when, self._seq, kind, args))

    def _do_tick(self, node_id: str, epoch: int) -> None:
        if self._epoch.get(node_id) != epoch or node_id not in self._machines:
            return  # the node was stopped (or restarted) since this tick was scheduled
        self._perform(node_id, self._machines[node_id].tick(self.now))
        self._push(self.now + self.interval, "tick", (node_id, epoch))

    def _do_deliver(self, to: str, epoch: int, kind: str, body: dict[str, Any]) -> None:
        machine = self._machines.get(to)
        if machine is None or self._epoch.get(to) != epoch:
            return  # crashed while the message was in flight
        self.stats.delivered += 1
        self._perform(to, machine.on_message(kind, body, self.now))

    def _do_refused(self, sender: str, epoch: int, to: str | None) -> None:
        machine = self._machines.get(sender)
        if machine is not None and self._epoch.get(sender) == epoch:
            self._perform(sender, machine.on_unreachable(to, self.now))

    def _perform(self, node_id: str, effects: list[Any]) -> None:
        for effect in effects:
            if hasattr(effect, "kind") and hasattr(effect, "body"):
                self._send(node_id, effect)
            else:
                self.events.append((self.now, effect))
                if self.on_event is not None:
                    self.on_event(self.now, effect)

    def _send(self, sender: str, send: Any) -> None:
        self.stats.sent += 1
        self.stats.by_kind[send.kind] = self.stats.by_kind.get(send.kind, 0) + 1
        body = send.body
        if self.wire_check:
            data = msgpack.packb(body, use_bin_type=True)
            self.stats.bytes += len(data)
            body = msgpack.unpackb(data, raw=False)
        to = self._addresses.get((send.host, send.port))
        delay = self.rng.uniform(*self.delay)
        if to is None or to not in self._machines or (sender, to) in self._blocked \
                or (send.node_id is not None and send.node_id != to):
            self.stats.refused += 1
            self._push(self.now + delay, "refused", (sender, self._epoch[sender], send.node_id))
            return
        if self.rng.random() < self._link_loss.get((sender, to), self.loss):
            self.stats.lost += 1
            return
        self._push(self.now + delay, "deliver", (to, self._epoch[to], send.kind, body))


def membership_cluster(n: int, seed: int = 0, *, loss: float = 0.0, config: Any = None,
                       seeds: int = 1, base_port: int = 7000, num_tokens: int = 2,
                       **router_kw: Any) -> tuple[SimRouter, dict[str, Any]]:
    """A router running ``n`` Membership nodes ``n00``, ``n01``, ... that know only the
    first ``seeds`` nodes' addresses (the way a fresh cluster starts from its seed list)."""
    router = SimRouter(seed, loss=loss, **router_kw)
    nodes: dict[str, Any] = {}
    for i in range(n):
        node = start_member(router, i, seed, config=config, base_port=base_port,
                            num_tokens=num_tokens)
        for s in range(min(seeds, n)):
            if s != i:
                node.add_seed("127.0.0.1", base_port + s)
        nodes[node.node_id] = node
    return router, nodes


def start_member(router: SimRouter, i: int, seed: int, *, generation: int = 1,
                 config: Any = None, base_port: int = 7000, state: str = "normal",
                 num_tokens: int = 2) -> Any:
    """Create node ``n{i:02d}`` at 127.0.0.1:base_port+i and add it to the router.

    Its tokens are random 64-bit values (seeded), as a real node's would be."""
    from ringkv.membership import Member, Membership

    node_id = f"n{i:02d}"
    token_rng = random.Random(f"tokens/{seed}/{node_id}")
    tokens = tuple(sorted(token_rng.getrandbits(64) for _ in range(num_tokens)))
    info = Member(node_id, port=base_port + i, http_port=base_port + 1000 + i,
                  tokens=tokens, state=state, generation=generation)
    node = Membership(info, random.Random(f"{seed}/{node_id}/{generation}"), config)
    router.add(node_id, info.host, info.port, node)
    return node
