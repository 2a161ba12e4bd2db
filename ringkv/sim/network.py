"""The simulated network: RpcServer/RpcClient look-alikes over a seeded, faulty medium.

:class:`SimRpcServer` and :class:`SimRpcClient` have the API of
:class:`ringkv.net.transport.RpcServer` / ``RpcClient`` that ringkv.node uses (``start``,
``close``, ``port``; ``call(host, port, method, body, timeout)``, ``drop``, ``close``) and
the same error contract: ``Timeout`` with ``no_reply`` when no reply came in time,
``Unavailable`` with ``peer_unreachable`` when nothing listens at the address, the
server's ``RingkvError`` rebuilt from its wire form otherwise. Bodies are msgpack-encoded
on send and decoded on delivery, as on TCP, so nodes never share mutable objects.

Faults (:class:`NetFaults`, all decisions drawn from one seeded ``random.Random`` in event
order): loss, duplication, delay (a floor plus exponential jitter, which reorders
messages) with rare long spikes, and partitions, which are directional: ``block(a, b)``
drops what ``a`` sends to ``b`` (one-way); symmetric partitions block both directions.
A message in flight to a node that crashed (or restarted: a new incarnation) is dropped,
like the requests on a TCP connection that broke. Every delivered message goes into the
trace digest (ringkv/sim/trace.py) in delivery order.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random
from dataclasses import dataclass
from typing import Any, Callable

import msgpack

from ringkv.errors import Closed, RingkvError, Timeout, Unavailable, from_wire
from ringkv.sim.loop import CURRENT, Incarnation, SimLoop
from ringkv.sim.trace import Trace

_pack = msgpack.Packer(use_bin_type=True).pack


def _unpack(data: bytes, _unpackb: Any = msgpack.unpackb) -> Any:
    return _unpackb(data, raw=False, use_list=True, strict_map_key=False)


@dataclass
class NetFaults:
    """Per-message fault rates between nodes (client links get delay only)."""

    loss: float = 0.0  # chance a message is dropped
    duplicate: float = 0.0  # chance a message is delivered twice
    delay_min: float = 0.0002  # seconds, every message
    delay_jitter: float = 0.0005  # mean of the exponential extra delay (reorders messages)
    spike_chance: float = 0.0  # chance of a long delay
    spike_max: float = 0.3  # seconds, uniform up to this


class SimNetwork:
    """Endpoints by address, partitions, fault rates; moves every message."""

    def __init__(self, loop: SimLoop, rng: random.Random, trace: Trace) -> None:
        self.loop, self.rng, self.trace = loop, rng, trace
        self.faults = NetFaults()
        self.endpoints: dict[tuple[str, int], "SimRpcServer"] = {}
        self.blocked: set[tuple[str, str]] = set()  # (from host, to host)
        self.nodes: set[str] = set()  # hosts of cluster nodes (faults apply between these)
        self.sent = self.delivered = self.dropped = self.duplicated = 0

    # -- partitions ------------------------------------------------------------------------
    def block(self, src: str, dst: str) -> None:
        self.blocked.add((src, dst))

    def partition(self, side: list[str], other: list[str], one_way: bool = False) -> None:
        """Cut ``side`` off from ``other`` (one way: only what ``side`` sends is lost)."""
        for a in side:
            for b in other:
                self.blocked.add((a, b))
                if not one_way:
                    self.blocked.add((b, a))

    def heal(self) -> None:
        self.blocked.clear()

    # -- factories the node is given ---------------------------------------------------------
    def server_factory(self) -> Callable[..., "SimRpcServer"]:
        return lambda handler, host, port, max_frame_bytes=0, **_kw: SimRpcServer(self, handler, host, port)

    def client_factory(self, host: str) -> Callable[..., "SimRpcClient"]:
        return lambda max_frame_bytes=0, **_kw: SimRpcClient(self, host)

    # -- moving messages ---------------------------------------------------------------------
    def transmit(self, src: str, dst: str, deliver: Callable[[], None],
                 context: contextvars.Context) -> None:
        """Send one message from host ``src`` to host ``dst``: maybe lost, maybe twice."""
        self.sent += 1
        if (src, dst) in self.blocked:
            self.dropped += 1
            return
        rng, f = self.rng, self.faults
        nodes = self.nodes
        faulty = src in nodes and dst in nodes
        if faulty and f.loss and rng.random() < f.loss:
            self.dropped += 1
            return
        if faulty and f.duplicate and rng.random() < f.duplicate:
            copies = 2
            self.duplicated += 1
        else:
            copies = 1
        call_fast = self.loop.call_fast
        for _ in range(copies):
            delay = f.delay_min + rng.expovariate(1.0 / f.delay_jitter)
            if faulty and f.spike_chance and rng.random() < f.spike_chance:
                delay += rng.uniform(0.0, f.spike_max)
            call_fast(delay, deliver, context)

    def rtt_guess(self) -> float:
        return 2 * (self.faults.delay_min + self.faults.delay_jitter)


class SimRpcServer:
    """Listens at ``(host, port)`` on the simulated network, for the current incarnation."""

    def __init__(self, net: SimNetwork, handler: Callable, host: str, port: int) -> None:
        self.net, self.handler = net, handler
        self.host, self.port = host, port
        self.inc: Incarnation | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> "SimRpcServer":
        self.inc = CURRENT.get()
        self.net.endpoints[(self.host, self.port)] = self
        return self

    async def close(self) -> None:
        if self.net.endpoints.get((self.host, self.port)) is self:
            del self.net.endpoints[(self.host, self.port)]

    def context(self) -> contextvars.Context:
        return self.inc.context if self.inc is not None else contextvars.Context()

    def receive(self, src: str, method: str, payload: bytes,
                reply: Callable[[bool, bytes], None]) -> None:
        """Deliver one request (a callback in this node's context)."""
        net = self.net
        if net.endpoints.get((self.host, self.port)) is not self:
            net.dropped += 1  # the connection died with the process
            return
        net.delivered += 1
        net.trace.message(net.loop.time(), src, self.host, method, payload)
        try:
            result = self.handler(method, _unpack(payload), src)
        except BaseException as exc:  # noqa: BLE001 - becomes the error reply
            return reply(False, _pack(_wire_error(exc)))
        if type(result) is dict:
            return reply(True, _pack(result))
        fut = asyncio.ensure_future(result)
        fut.add_done_callback(lambda f: _reply_from(f, reply))


def _reply_from(fut: asyncio.Future, reply: Callable[[bool, bytes], None]) -> None:
    if fut.cancelled():
        return reply(False, _pack(_wire_error(Closed("request cancelled"))))
    exc = fut.exception()
    if exc is not None:
        return reply(False, _pack(_wire_error(exc)))
    try:
        data = _pack(fut.result())
    except Exception as err:  # noqa: BLE001 - an unencodable reply is a server error
        return reply(False, _pack(_wire_error(err)))
    reply(True, data)


def _wire_error(exc: BaseException) -> dict:
    if isinstance(exc, RingkvError):
        return exc.to_wire()
    return RingkvError(f"internal error: {type(exc).__name__}").to_wire()


class SimRpcClient:
    """Calls peers over the simulated network on behalf of host ``host``."""

    _ids = itertools.count(1)

    def __init__(self, net: SimNetwork, host: str) -> None:
        self.net, self.host = net, host
        self._pending: dict[int, asyncio.Future] = {}
        self._closed = False
        # what ringkv.node_ops.request's fast path looks for (a pooled, open connection):
        # with it a node's RPC costs no coroutine and no Task, as on the real transport
        self._pool = _Pool(self)

    async def call(self, host: str, port: int, method: str, body: dict,
                   timeout: float | None = 2.0) -> dict:
        if self._closed:
            raise Closed("rpc client is closed")
        rid, fut = self._send(host, port, method, body)
        peer = f"{host}:{port}"
        if timeout is not None:
            self.net.loop.call_fast(timeout, lambda: self._expire(rid, method, peer, timeout),
                                    contextvars.copy_context())
        try:
            return await fut
        finally:
            self._pending.pop(rid, None)

    def _send(self, host: str, port: int, method: str, body: dict) -> tuple[int, asyncio.Future]:
        """Send one request; its id and the future of the reply (no timeout here)."""
        net, loop = self.net, self.net.loop
        fut = loop.create_future()
        rid = next(self._ids)
        self._pending[rid] = fut
        server = net.endpoints.get((host, port))
        here = contextvars.copy_context()
        if server is None:  # nothing listens: refused after a round trip
            loop.call_fast(net.rtt_guess(), lambda: self._refused(rid, f"{host}:{port}"), here)
        else:
            payload = _pack(body)
            reply = lambda ok, data: net.transmit(  # noqa: E731
                host, self.host, lambda: self._on_reply(rid, ok, data, host, method), here)
            net.transmit(self.host, host, lambda: server.receive(self.host, method, payload, reply),
                         server.context())
        return rid, fut

    def _on_reply(self, rid: int, ok: bool, data: bytes, src: str, method: str) -> None:
        fut = self._pending.get(rid)
        self.net.trace.message(self.net.loop.time(), src, self.host, "reply:" + method, data)
        if fut is None or fut.done():
            return  # late (timed out) or a duplicate
        body = _unpack(data)
        if ok:
            fut.set_result(body)
        else:
            fut.set_exception(from_wire(body) if isinstance(body, dict) else RingkvError("bad reply"))

    def _refused(self, rid: int, peer: str) -> None:
        fut = self._pending.get(rid)
        if fut is not None and not fut.done():
            err = Unavailable(1, 0, f"cannot connect to {peer}: connection refused")
            err.peer_unreachable = True  # type: ignore[attr-defined]
            fut.set_exception(err)

    def _expire(self, rid: int, method: str, peer: str, timeout: float) -> None:
        fut = self._pending.get(rid)
        if fut is not None and not fut.done():
            err = Timeout(1, 0, f"{method} to {peer}: no reply in {timeout:g}s")
            err.no_reply = True  # type: ignore[attr-defined]
            fut.set_exception(err)

    def drop(self, host: str, port: int) -> None:
        pass  # no connections to drop

    async def close(self) -> None:
        self._closed = True
        for fut in list(self._pending.values()):
            if not fut.done():
                err = Unavailable(1, 0, "rpc client closed")
                err.peer_unreachable = True  # type: ignore[attr-defined]
                fut.set_exception(err)


class _Conn:
    """A 'connection' to one peer in the shape ``node_ops.request`` uses: ``lost``,
    ``loop``, ``peer``, ``pending`` (rid -> future) and ``send(method, body)``."""

    __slots__ = ("client", "addr", "peer", "loop", "pending")

    def __init__(self, client: SimRpcClient, addr: tuple[str, int]) -> None:
        self.client, self.addr = client, addr
        self.peer = f"{addr[0]}:{addr[1]}"
        self.loop = client.net.loop
        self.pending = client._pending

    @property
    def lost(self) -> bool:
        return self.client._closed or self.addr not in self.client.net.endpoints

    def send(self, method: str, body: dict) -> tuple[int, asyncio.Future]:
        rid, fut = self.client._send(self.addr[0], self.addr[1], method, body)
        fut.add_done_callback(lambda f: self.pending.pop(rid, None))
        return rid, fut


class _Pool:
    """``rpc._pool.get((host, port))`` -> ``[conn]``, one per peer."""

    def __init__(self, client: SimRpcClient) -> None:
        self._client = client
        self._conns: dict[tuple[str, int], list[_Conn]] = {}

    def get(self, addr: tuple[str, int], default: Any = None) -> list[_Conn]:
        slots = self._conns.get(addr)
        if slots is None:
            slots = self._conns[addr] = [_Conn(self._client, addr)]
        return slots


__all__ = ["SimNetwork", "SimRpcServer", "SimRpcClient", "NetFaults"]
