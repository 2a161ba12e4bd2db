"""Network namespaces for chaos runs: one host per node, a bridge, a client host, real cuts.

Topology (created by :meth:`Topology.create`, removed by :meth:`Topology.remove`, which
callers run in ``finally``; every name carries a per-run tag so concurrent runs do not
collide)::

    netns rkxb-<tag>:  bridge br0 ── v1 ── v2 ── ... ── vc
                                      │     │            │   (veth pairs)
    netns rkx1-<tag>:  eth0 10.231.S.1/24   │            │
    netns rkx2-<tag>:        eth0 10.231.S.2/24          │
    netns rkxc-<tag>:                        eth0 10.231.S.200/24   (workload + checker)

The 10.231.S.0/24 addresses exist only inside these namespaces: they are the project's
own test hosts and nothing else is ever contacted. Partitions are routes inside a node's
namespace: ``blackhole <peer>/32`` drops silently (the sender waits for its timeout),
``prohibit <peer>/32`` fails at once (EACCES). A route on one side only is a one-way cut
(TCP then breaks both ways, with different symptoms on each side); healing deletes exactly
the routes that were added.

:func:`run_in_netns` runs a function on a fresh thread that first enters a namespace
(``setns``): network namespaces are per thread, so the caller's thread (and pytest) stays
where it was, while every socket the function (and threads it starts) opens lives in the
chosen namespace.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

CLONE_NEWNET = 0x40000000
CLIENT_HOST = 200


class NetnsError(Exception):
    """An ``ip`` command failed."""


def ip(*args: str) -> None:
    """Run one ``ip`` command; NetnsError with its stderr on failure."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Topology:
    """The bridge namespace, ``hosts`` node namespaces and one client namespace."""

    hosts: int
    subnet: int = 1  # the S of 10.231.S.0/24
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    created: list[str] = field(default_factory=list)
    routes: set[tuple[int, int, str]] = field(default_factory=set)  # (from, to, kind)

    @property
    def bridge(self) -> str:
        return f"rkxb-{self.tag}"

    @property
    def client(self) -> str:
        return f"rkxc-{self.tag}"

    def ns(self, i: int) -> str:
        """Namespace of host ``i`` (0-based)."""
        return f"rkx{i + 1}-{self.tag}"

    def addr(self, i: int) -> str:
        """Address of host ``i`` (0-based)."""
        return f"10.231.{self.subnet}.{i + 1}"

    @property
    def client_addr(self) -> str:
        return f"10.231.{self.subnet}.{CLIENT_HOST}"

    def create(self) -> "Topology":
        """Build every namespace and link; on failure, undo what was built and raise."""
        try:
            self._add_ns(self.bridge)
            ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
            ip("-n", self.bridge, "link", "set", "br0", "up")
            for i in range(self.hosts):
                self._add_host(self.ns(i), f"v{i + 1}", self.addr(i))
            self._add_host(self.client, "vc", self.client_addr)
        except BaseException:
            self.remove()
            raise
        return self

    def add_host(self, i: int) -> None:
        """Add host ``i`` (>= hosts) later, e.g. a node that joins during the run."""
        self._add_host(self.ns(i), f"v{i + 1}", self.addr(i))
        self.hosts = max(self.hosts, i + 1)

    def _add_ns(self, name: str) -> None:
        ip("netns", "add", name)
        self.created.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _add_host(self, ns: str, veth: str, addr: str) -> None:
        self._add_ns(ns)
        ip("-n", self.bridge, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
           "netns", ns)
        ip("-n", self.bridge, "link", "set", veth, "master", "br0")
        ip("-n", self.bridge, "link", "set", veth, "up")
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")

    def remove(self) -> list[str]:
        """Delete every namespace created (veths, bridge and routes go with them)."""
        errors = []
        for name in reversed(self.created):
            result = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True)
            if result.returncode != 0:
                errors.append(f"ip netns del {name}: {result.stderr.strip()}")
        self.created.clear()
        self.routes.clear()
        return errors

    # -- cuts ------------------------------------------------------------------------

    def cut(self, src: int, dst: int, kind: str = "blackhole") -> None:
        """Host ``src`` can no longer send to host ``dst`` (``kind``: blackhole or prohibit)."""
        if any(r[:2] == (src, dst) for r in self.routes):
            return
        ip("-n", self.ns(src), "route", "add", kind, f"{self.addr(dst)}/32")
        self.routes.add((src, dst, kind))

    def uncut(self, src: int, dst: int) -> None:
        for route in [r for r in self.routes if r[:2] == (src, dst)]:
            ip("-n", self.ns(src), "route", "del", route[2], f"{self.addr(dst)}/32")
            self.routes.discard(route)

    def partition(self, a: list[int], b: list[int], kind: str = "blackhole",
                  one_way: bool = False) -> None:
        """Cut every link from group ``a`` to group ``b`` (and back unless ``one_way``)."""
        for x in a:
            for y in b:
                self.cut(x, y, kind)
                if not one_way:
                    self.cut(y, x, kind)

    def heal(self) -> None:
        """Remove every cut."""
        for src, dst, _kind in sorted(self.routes):
            self.uncut(src, dst)


def _setns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(name: str, fn: Callable[[], Any], *, start: bool = True) -> "NetnsThread":
    """Run ``fn()`` on a new thread inside namespace ``name``; ``.join()`` gives its result."""
    thread = NetnsThread(name, fn)
    if start:
        thread.start()
    return thread


class NetnsThread(threading.Thread):
    """A thread that enters a network namespace, runs a function and keeps its outcome."""

    def __init__(self, name: str, fn: Callable[[], Any]) -> None:
        super().__init__(name=f"netns-{name}", daemon=True)
        self.ns_name, self.fn = name, fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            _setns(self.ns_name)
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the joiner
            self.error = exc

    def outcome(self, timeout: float | None = None) -> Any:
        """Join and return ``fn``'s result, re-raising its exception."""
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"{self.name} still running after {timeout}s")
        if self.error is not None:
            raise self.error
        return self.result


def call_in_netns(name: str, fn: Callable[[], Any], timeout: float | None = None) -> Any:
    """Run ``fn()`` inside namespace ``name`` and return its result (blocking)."""
    return run_in_netns(name, fn).outcome(timeout)


__all__ = ["Topology", "NetnsError", "ip", "run_in_netns", "call_in_netns", "NetnsThread"]
