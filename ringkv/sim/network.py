"""The simulated network: RpcServer/RpcClient look-alikes over a seeded, faulty medium.

:class:`SimRpcServer` and :class:`SimRpcClient` have the API of
:class:`ringkv.net.transport.RpcServer` / ``RpcClient`` that ringkv.node uses (``start``,
``close``, ``port``; ``call(host, port, method, body, timeout)``, ``drop``, ``close``) and
the same error contract: ``Timeout`` with ``no_reply`` when no reply came in time,
``Unavailable`` with ``peer_unreachable`` when nothing listens at the address, the
server's ``RingkvError`` rebuilt from its wire form otherwise. Bodies are msgpack-encoded
on send and decoded on delivery, as on TCP, so nodes never share mutable objects. The
server drives ``async`` handlers eagerly (no Task), as the node asks of the real one;
``call`` returns a future rather than a coroutine (no Task per request either).

Cost matters here (every message of a run passes through this module): deliveries go
on the loop's fast heap as (function, arguments) with no closure, and request timeouts
on its timeout queues (:meth:`SimLoop.call_timeout`), not on the heap.

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
import functools
import itertools
import random
from dataclasses import dataclass
from heapq import heappush as _heappush
from math import log as _log
from types import CoroutineType
from typing import Any, Callable

import msgpack

from ringkv.errors import Closed, RingkvError, Timeout, Unavailable, from_wire
from ringkv.net.transport import COROUTINE_TYPES
from ringkv.sim.loop import CURRENT, NOWHERE, Incarnation, SimLoop, here
from ringkv.sim.trace import Trace

_pack = msgpack.Packer(use_bin_type=True).pack
_unpack = functools.partial(msgpack.unpackb, raw=False, use_list=True, strict_map_key=False)


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
    def transmit(self, src: str, dst: str, deliver: Callable[..., None],
                 context: contextvars.Context, args: tuple = ()) -> None:
        """Send one message from host ``src`` to host ``dst`` (``deliver(*args)`` in
        ``context`` on arrival): maybe lost, maybe twice."""
        self.sent += 1
        if (src, dst) in self.blocked:
            self.dropped += 1
            return
        rng, f = self.rng, self.faults
        rand = rng.random
        nodes = self.nodes
        faulty = src in nodes and dst in nodes
        copies = 1
        if faulty:
            if f.loss and rand() < f.loss:
                self.dropped += 1
                return
            if f.duplicate and rand() < f.duplicate:
                copies = 2
                self.duplicated += 1
        loop = self.loop
        lambd = 1.0 / f.delay_jitter
        for _ in range(copies):
            # f.delay_min + rng.expovariate(lambd), inlined (the same draws, the same value)
            delay = f.delay_min + -_log(1.0 - rand()) / lambd
            if faulty and f.spike_chance and rand() < f.spike_chance:
                delay += rng.uniform(0.0, f.spike_max)
            loop._fast_seq += 1  # loop.call_fast, inlined
            _heappush(loop._fast, (loop._now + delay, loop._fast_seq, deliver, args, context))

    def rtt_guess(self) -> float:
        return 2 * (self.faults.delay_min + self.faults.delay_jitter)


class SimRpcServer:
    """Listens at ``(host, port)`` on the simulated network, for the current incarnation.

    ``eager`` (what ringkv.node asks of the real ``RpcServer``): a handler's coroutine is
    driven without a Task, to its first suspension at once, as ``transport._step`` does."""

    def __init__(self, net: SimNetwork, handler: Callable, host: str, port: int,
                 eager: bool = True) -> None:
        self.net, self.handler = net, handler
        self.host, self.port = host, port
        self._addr = (host, port)
        self.eager = eager
        self.inc: Incarnation | None = None
        self.context = NOWHERE  # where deliveries run: the incarnation that started us

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> "SimRpcServer":
        self.inc = CURRENT.get()
        self.context = here()
        self.net.endpoints[(self.host, self.port)] = self
        return self

    async def close(self) -> None:
        if self.net.endpoints.get((self.host, self.port)) is self:
            del self.net.endpoints[(self.host, self.port)]

    def receive(self, client: "SimRpcClient", rid: int, method: str, payload: bytes,
                reply_ctx: contextvars.Context) -> None:
        """Deliver one request (a callback in this node's context); the reply goes back to
        ``client`` in ``reply_ctx`` (the caller's process)."""
        net = self.net
        if net.endpoints.get(self._addr) is not self:
            net.dropped += 1  # the connection died with the process
            return
        net.delivered += 1
        net.trace.message(net.loop._now, client.host, self.host, method, payload)
        back = (client, rid, _reply_name(method), reply_ctx)
        try:
            result = self.handler(method, _unpack(payload), client.host)
            if type(result) is dict:
                return self._reply(back, result, None)
            if self.eager and type(result) in COROUTINE_TYPES:
                return self._step(back, result)
            fut = asyncio.ensure_future(result)
        except Exception as exc:  # noqa: BLE001 - becomes the error reply
            return self._reply(back, None, exc)
        fut.add_done_callback(functools.partial(self._task_done, back))

    def _step(self, back: tuple, coro: CoroutineType, _waited: object = None) -> None:
        """Run an eager handler's coroutine to its next suspension (transport._step)."""
        try:
            waited = coro.send(None)
        except StopIteration as stop:
            return self._reply(back, stop.value, None)
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001
            return self._reply(back, None, exc)
        if getattr(waited, "_asyncio_future_blocking", None):  # awaiting an asyncio future
            waited._asyncio_future_blocking = False  # type: ignore[union-attr]
            waited.add_done_callback(functools.partial(self._step, back, coro))  # type: ignore[union-attr]
        elif waited is None:  # a bare yield, as in asyncio.sleep(0)
            self.net.loop.call_soon(self._step, back, coro)
        else:
            coro.close()
            self._reply(back, None, RuntimeError(f"eager handler yielded {waited!r}"))

    def _task_done(self, back: tuple, fut: asyncio.Future) -> None:
        if fut.cancelled():
            return self._reply(back, None, Closed("request cancelled"))
        exc = fut.exception()
        self._reply(back, None if exc is not None else fut.result(), exc)

    def _reply(self, back: tuple, result: Any, exc: BaseException | None) -> None:
        """Encode the reply as transport's ``_reply`` does and send it back."""
        client, rid, method, reply_ctx = back
        if exc is None and type(result) is not dict:
            exc = TypeError(f"handler returned {type(result).__name__}, not dict")
        if exc is None:
            try:
                ok, data = True, _pack(result)
            except Exception as err:  # noqa: BLE001 - an unencodable reply is a server error
                ok, data = False, _pack(_wire_error(err))
        else:
            ok, data = False, _pack(_wire_error(exc))
        self.net.transmit(self.host, client.host, client._on_reply, reply_ctx,
                          (rid, ok, data, self.host, method))  # method: "reply:<request's>"


_REPLY_NAMES: dict[str, str] = {}


def _reply_name(method: str) -> str:
    """``"reply:" + method`` for the trace, made once per method name."""
    name = _REPLY_NAMES.get(method)
    if name is None:
        name = "reply:" + method
        if len(_REPLY_NAMES) < 1024:
            _REPLY_NAMES[method] = name
    return name


def _wire_error(exc: BaseException) -> dict:
    if isinstance(exc, RingkvError):
        return exc.to_wire()
    return RingkvError(f"internal error: {type(exc).__name__}").to_wire()


class SimRpcClient:
    """Calls peers over the simulated network on behalf of host ``host``.

    ``call`` returns a plain future (awaitable like the real client's coroutine; no Task
    per request): ``await``, ``ensure_future``, ``wait_for`` and ``gather`` take it."""

    _ids = itertools.count(1)

    def __init__(self, net: SimNetwork, host: str) -> None:
        self.net, self.host = net, host
        self._pending: dict[int, asyncio.Future] = {}  # rid -> future, until resolved
        self._timers: dict[int, list] = {}  # rid -> its call()'s timeout, cancelled on reply
        self._closed = False
        # what ringkv.node_ops.request's fast path looks for (a pooled, open connection):
        # with it a node's RPC costs no coroutine and no Task, as on the real transport
        self._pool = _Pool(self)

    def call(self, host: str, port: int, method: str, body: dict,
             timeout: float | None = 2.0) -> asyncio.Future:
        if self._closed:
            fut = self.net.loop.create_future()
            fut.set_exception(Closed("rpc client is closed"))
            return fut
        ctx = here()
        rid, fut = self._send(host, port, method, body, ctx)
        if timeout is not None:
            self._timers[rid] = self.net.loop.call_timeout(timeout, self._expire, ctx,
                                                           (rid, method, host, port, timeout))
        else:
            fut.add_done_callback(lambda f: self._pending.pop(rid, None))
        return fut

    def _send(self, host: str, port: int, method: str, body: dict,
              ctx: contextvars.Context | None = None) -> tuple[int, asyncio.Future]:
        """Send one request; its id and the future of the reply (no timeout here). The
        reply is delivered in ``ctx``, the sending process (default: the current one)."""
        net = self.net
        fut = net.loop.create_future()
        rid = next(self._ids)
        self._pending[rid] = fut
        if ctx is None:
            ctx = here()
        server = net.endpoints.get((host, port))
        if server is None:  # nothing listens: refused after a round trip
            net.loop.call_fast(net.rtt_guess(), self._refused, ctx, (rid, host, port))
        else:
            net.transmit(self.host, host, server.receive, server.context,
                         (self, rid, method, _pack(body), ctx))
        return rid, fut

    def _on_reply(self, rid: int, ok: bool, data: bytes, src: str, method: str) -> None:
        fut = self._pending.pop(rid, None)
        timer = self._timers.pop(rid, None)
        if timer is not None:
            timer[2] = None  # the timeout is moot: cancel it (see SimLoop.call_timeout)
        self.net.trace.message(self.net.loop._now, src, self.host, method, data)
        if fut is None or fut.done():
            return  # late (timed out), a duplicate, or cancelled
        body = _unpack(data)
        if ok:
            fut.set_result(body)
        else:
            fut.set_exception(from_wire(body) if isinstance(body, dict) else RingkvError("bad reply"))

    def _refused(self, rid: int, host: str, port: int) -> None:
        fut = self._pending.pop(rid, None)
        timer = self._timers.pop(rid, None)
        if timer is not None:
            timer[2] = None
        if fut is not None and not fut.done():
            err = Unavailable(1, 0, f"cannot connect to {host}:{port}: connection refused")
            err.peer_unreachable = True  # type: ignore[attr-defined]
            fut.set_exception(err)

    def _expire(self, rid: int, method: str, host: str, port: int, timeout: float) -> None:
        fut = self._pending.pop(rid, None)
        self._timers.pop(rid, None)
        if fut is not None and not fut.done():
            err = Timeout(1, 0, f"{method} to {host}:{port}: no reply in {timeout:g}s")
            err.no_reply = True  # type: ignore[attr-defined]
            fut.set_exception(err)

    def drop(self, host: str, port: int) -> None:
        pass  # no connections to drop

    async def close(self) -> None:
        self._closed = True
        pending = list(self._pending.values())
        self._pending.clear()  # the same dict the pooled 'connections' hold
        for timer in self._timers.values():
            timer[2] = None
        self._timers.clear()
        for fut in pending:
            if not fut.done():
                err = Unavailable(1, 0, "rpc client closed")
                err.peer_unreachable = True  # type: ignore[attr-defined]
                fut.set_exception(err)


class _FastTimer:
    """What ``_Conn.loop.call_later`` returns: ``cancel()`` only (a TimerHandle look-alike)."""

    __slots__ = ("entry",)

    def __init__(self, entry: list) -> None:
        self.entry = entry

    def cancel(self) -> None:
        self.entry[2] = None  # SimLoop.call_timeout's cancellation


class _TimerLoop:
    """``conn.loop`` for node_ops.request: its per-request timeout goes on the sim loop's
    timeout queues (no TimerHandle, no heap), in the caller's process."""

    __slots__ = ("_loop",)

    def __init__(self, loop: SimLoop) -> None:
        self._loop = loop

    def call_later(self, delay: float, fn: Callable, *args: Any) -> _FastTimer:
        return _FastTimer(self._loop.call_timeout(delay, fn, here(), args))


class _Conn:
    """A 'connection' to one peer in the shape ``node_ops.request`` uses: ``lost``,
    ``loop`` (only its ``call_later``), ``peer``, ``pending`` (rid -> future; what
    ``transport._expire`` pops) and ``send(method, body)``."""

    __slots__ = ("client", "addr", "peer", "loop", "pending")

    def __init__(self, client: SimRpcClient, addr: tuple[str, int]) -> None:
        self.client, self.addr = client, addr
        self.peer = f"{addr[0]}:{addr[1]}"
        self.loop = _TimerLoop(client.net.loop)
        self.pending = client._pending

    @property
    def lost(self) -> bool:
        return self.client._closed or self.addr not in self.client.net.endpoints

    def send(self, method: str, body: dict) -> tuple[int, asyncio.Future]:
        return self.client._send(self.addr[0], self.addr[1], method, body)


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
