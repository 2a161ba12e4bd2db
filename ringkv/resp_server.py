"""A RESP2 (Redis protocol) front end for a ringkv node, on its own port.

``RespServer(ops, host, port, limits, info)`` serves redis-cli, redis-py and
redis-benchmark. ``ops`` is the node (see :mod:`ringkv.resp_commands` for the three
coroutines it must offer); ``info()`` returns a dict of node stats shown by ``INFO``.
Parsing is :mod:`ringkv.net.resp` (sans-IO); what commands mean is
:mod:`ringkv.resp_commands`; this module is the connection shell.

Contracts:
- Replies leave in the order the commands arrived, always. The commands of one read
  (a pipelined batch) run *concurrently* where that is safe: consecutive commands join one
  group until a command would write a key the group reads or writes, or read a key the
  group writes (so ``SET k; GET k`` still sees its own write). A group's replies are
  written with one ``transport.write`` when the group completes.
- No Task per command or per connection: a command starts as soon as it is parsed and
  is driven by the callbacks of the futures it awaits (:func:`_start_eager`); commands
  that do not touch the node (PING, INFO, CLIENT ...) are answered at parse time.
- The hot path (:meth:`_RespConnection._run_group`): a group's plain GETs go to the node
  together, and those it can answer at once (``Commands.get_many``) need no coroutine or
  future; a group's plain SETs are applied together with one durability wait
  (``Commands.set_many``); each still gets the reply, error and durability of its own
  command.
- Client input never stops the server or another connection: an unknown command or bad
  arguments get ``-ERR ...`` and the connection goes on; a node error gets a Redis-style
  error (``-UNAVAILABLE``, ``-TIMEOUT``, ``-TOOLARGE``, ...); bytes that are not RESP (or
  are past :class:`~ringkv.net.resp.RespLimits`) get ``-ERR Protocol error: ...`` after the
  replies to the commands before them, then that connection alone is closed.
- Authenticated (``password``, the cluster secret, D41): a connection's commands other
  than AUTH, HELLO ... AUTH and QUIT get ``-NOAUTH`` until ``AUTH [default] <password>``
  (or ``HELLO <proto> AUTH default <password>``) succeeds; a wrong one gets
  ``-WRONGPASS``, as Redis's ``requirepass`` does.
- Bounded: at most ``max_connections`` connections (more are refused with an error), at
  most ``max_pending`` commands queued per connection (it stops reading past that), at most
  ``max_group`` commands in flight per connection, and no reading while its write buffer is
  full.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import itertools
import logging
from collections import deque
from typing import Any, Callable, Coroutine

from ringkv.config import LimitsConfig
from ringkv.errors import RingkvError
from ringkv.net import resp
from ringkv.net.resp import Command, RespLimits
from ringkv.net.resp_fast import FastRespParser
from ringkv.resp_commands import Commands, KvOps, Session, Spec, error_reply

log = logging.getLogger(__name__)

_CLOSE = object()  # queue marker: close the connection once everything before it is written


_OTHER, _GET, _SET = 0, 1, 2  # _Call.kind: plain GET / plain SET take the batched hot path


class _Call:
    """A queued command that calls the node."""

    __slots__ = ("spec", "args", "reads", "writes", "kind")

    def __init__(self, spec: Spec, args: Command, kind: int = _OTHER) -> None:
        self.spec, self.args, self.kind = spec, args, kind
        if kind == _GET:
            self.reads, self.writes = (args[1],), ()
        elif kind == _SET:
            self.reads, self.writes = (), (args[1],)
        else:
            self.reads, self.writes = spec.keys(args) if spec.keys else ((), ())


class RespServer:
    """Serves RESP2 on ``host:port`` (``port=0`` picks a free one; see :attr:`port`)."""

    def __init__(self, ops: KvOps, host: str = "127.0.0.1", port: int = 6380,
                 limits: LimitsConfig = LimitsConfig(), info: Callable[[], dict] | None = None,
                 *, max_connections: int = 10_000, max_pending: int = 4096,
                 max_group: int = 256, ssl: Any = None, password: bytes | None = None) -> None:
        self.host, self.port = host, port
        self.password = password  # AUTH's password (the cluster secret); None = none needed
        self.ssl = ssl  # a server SSLContext: serve RESP over TLS (D33)
        self.resp_limits = RespLimits.from_config(limits)
        self.max_connections, self.max_pending, self.max_group = max_connections, max_pending, max_group
        self.stats: dict[str, int] = {"connected_clients": 0, "max_connections": max_connections,
                                      "total_connections_received": 0, "total_commands_processed": 0,
                                      "rejected_connections": 0, "protocol_errors": 0,
                                      "errors_replied": 0}
        self.commands = Commands(ops, limits, info or dict, self.stats, port)
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_RespConnection] = set()
        self._ids = itertools.count(1)
        self._outbox: list[tuple[asyncio.Transport, bytes]] = []  # replies of this loop turn

    def send(self, transport: asyncio.Transport, data: bytes) -> None:
        """Write ``data`` at the end of this event-loop turn, after every connection that
        became readable in it has been read: the replies leave in one burst."""
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self.flush_outbox)
        self._outbox.append((transport, data))

    def flush_outbox(self) -> None:
        box, self._outbox = self._outbox, []
        for transport, data in box:
            if not transport.is_closing():
                transport.write(data)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, self.host, self.port,
                                                ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        self.commands.port = self.port

    async def stop(self) -> None:
        """Stop listening, close every connection and wait for their in-flight commands."""
        if self._server is not None:
            self._server.close()
        conns = list(self._conns)
        loop = asyncio.get_running_loop()
        waits = []
        for conn in conns:
            conn.abort()
            if conn._in_flight:
                conn.idle = loop.create_future()
                waits.append(conn.idle)
        if waits:
            await asyncio.wait(waits, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "RespServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _new_connection(self) -> "_RespConnection":
        return _RespConnection(self, next(self._ids))


class _RespConnection(asyncio.Protocol):
    """One client connection: parse, schedule, reply in order. Callback driven: no Task per
    command or per connection (see :func:`_start_eager`)."""

    def __init__(self, server: RespServer, conn_id: int) -> None:
        self.server = server
        self.commands = server.commands
        self.parser = FastRespParser(server.resp_limits)
        self.session = Session(conn_id)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[Any] = deque()  # bytes (ready reply) | _Call | _CLOSE
        self.closed = False
        self._read_paused = False
        self._write_paused = False
        self._slots: list[Any] = []  # the group in flight: replies, and _Calls being run
        self._in_flight = 0  # calls of that group not finished yet
        self._close_after = False
        self._starting = False
        self.idle: asyncio.Future | None = None  # set by stop(): resolved when nothing is in flight

    # --------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        stats = self.server.stats
        peer = transport.get_extra_info("peername")
        self.session.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self.server._conns) >= self.server.max_connections:
            stats["rejected_connections"] += 1
            self.closed = True
            transport.write(resp.error("ERR max number of clients reached"))  # type: ignore[attr-defined]
            transport.close()
            return
        self.server._conns.add(self)
        self.session.authed = self.server.password is None
        stats["connected_clients"] = len(self.server._conns)
        stats["total_connections_received"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.queue.clear()
        if self in self.server._conns:
            self.server._conns.discard(self)
            self.server.stats["connected_clients"] = len(self.server._conns)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._pump()

    def data_received(self, data: bytes) -> None:
        if self.closed or self.session.closing:
            return
        cmds = self.parser.feed(data)
        steps = self._prepare(cmds) if cmds else []
        if self.parser.error is not None and not self.session.closing:
            self.server.stats["protocol_errors"] += 1
            steps += [resp.error(f"ERR Protocol error: {self.parser.error}"), _CLOSE]
        if not steps:
            return
        self.queue.extend(steps)
        if len(self.queue) > self.server.max_pending and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._pump()

    def abort(self) -> None:
        """Close now (server shutdown): queued commands are dropped, in-flight ones finish
        (their replies are dropped too)."""
        self._close()

    # --------------------------------------------------------------- scheduling

    def _prepare(self, cmds: list[Command]) -> list[Any]:
        """Turn parsed commands into queue steps; run the ones that do not touch the node."""
        steps: list[Any] = []
        session, stats = self.session, self.server.stats
        stats["total_commands_processed"] += len(cmds)
        cmds_table = self.commands
        lookup, get_spec, set_spec = cmds_table.lookup, cmds_table.get_spec, cmds_table.set_spec
        password = self.server.password
        for args in cmds:
            if password is not None:
                gate = _auth_gate(password, session, args)
                if gate is not None:
                    steps.append(gate)
                    continue
            spec = lookup(args[0])
            if spec is None:
                steps.append(_NO_PASSWORD if args[0].upper() == b"AUTH" else _unknown(args))
            elif (spec.arity > 0 and len(args) != spec.arity) or len(args) < -spec.arity:
                steps.append(resp.error(f"ERR wrong number of arguments for "
                                        f"'{spec.name}' command"))
            elif spec.is_async:
                kind = _GET if spec is get_spec else _SET if spec is set_spec and len(args) == 3 \
                    else _OTHER
                steps.append(_Call(spec, args, kind))
            else:
                steps.append(_run_sync(spec, session, args))
            if session.closing:
                steps.append(_CLOSE)
                break
        return steps

    def _pump(self) -> None:
        """Run queued groups until one has to wait for the node (its last call resumes us)."""
        try:
            while self.queue and not self._in_flight and not self.closed and not self._write_paused:
                slots, close = self._take_group()
                if self._run_group(slots, close):
                    return
                self._flush(slots, close)
            if self._read_paused and len(self.queue) <= self.server.max_pending // 2 \
                    and not self.closed:
                self._read_paused = False
                self.transport.resume_reading()  # type: ignore[union-attr]
        except Exception:  # a bug here must not leave the connection hanging
            log.exception("RESP connection %d failed", self.session.id)
            self._close()

    def _run_group(self, slots: list[Any], close: bool) -> bool:
        """Start every call of the group; True if some are still running.

        The hot path: the group's plain GETs go to the node together (:meth:`_run_gets`),
        and those it answers at once (its only replica is here) need no coroutine or
        future; its plain SETs go together too (:meth:`_run_sets`), one durability wait
        for all of them."""
        idx = [i for i, s in enumerate(slots) if type(s) is not bytes]
        if not idx:
            return False
        self._slots, self._close_after = slots, close
        self._in_flight = len(idx)
        self._starting = True
        gets: list[int] = []
        sets: list[int] = []
        try:
            for i in idx:
                call = slots[i]
                kind = call.kind
                if kind == _GET:
                    gets.append(i)  # the group's keys do not conflict: order is free
                elif kind == _SET:
                    sets.append(i)
                else:
                    self._start(i, call)
            if gets:
                self._run_gets(slots, gets)
            if sets:
                self._run_sets(slots, sets)
        finally:
            self._starting = False
        return self._in_flight > 0

    def _start(self, i: int, call: _Call) -> None:
        _start_eager(call.spec.handler(self.session, call.args),
                     functools.partial(self._call_done, i), self._call_failed)

    def _run_gets(self, slots: list[Any], gets: list[int]) -> None:
        """The group's plain GETs (slots ``gets``): answered together by the node where it
        can (:meth:`Commands.get_many`); the others run as usual."""
        try:
            outcomes = self.commands.get_many(self.session, [slots[i].args for i in gets])
        except Exception as exc:  # every error of a command is a reply
            outcomes = [exc] * len(gets)
        for i, outcome in zip(gets, outcomes):
            if outcome is None:
                self._start(i, slots[i])
            elif outcome.__class__ is bytes:
                slots[i] = outcome
                self._in_flight -= 1
            else:
                slots[i] = self._call_failed(outcome)
                self._in_flight -= 1

    def _run_sets(self, slots: list[Any], sets: list[int]) -> None:
        """The group's plain SETs (slots ``sets``): applied together by the node where it
        can, each replied OK once the shared durability future is done; the others run as
        usual (:meth:`Commands.set_many`)."""
        outcomes, durable = self.commands.set_many(self.session, [slots[i].args for i in sets])
        waiting = []
        for i, outcome in zip(sets, outcomes):
            if outcome is True:
                if durable is None:
                    slots[i] = resp.OK
                    self._in_flight -= 1
                else:
                    waiting.append(i)
            elif outcome is False:
                self._start(i, slots[i])
            else:
                slots[i] = self._call_failed(outcome)
                self._in_flight -= 1
        if waiting:
            durable.add_done_callback(functools.partial(self._sets_durable, waiting))

    def _sets_durable(self, waiting: list[int], durable: asyncio.Future) -> None:
        if durable.cancelled():
            exc: BaseException | None = asyncio.CancelledError()
        else:
            exc = durable.exception()
        for i in waiting:
            self._call_done(i, resp.OK if exc is None else self._call_failed(exc))

    def _call_failed(self, exc: BaseException) -> bytes:
        if not isinstance(exc, _EXPECTED):
            log.error("RESP command failed", exc_info=exc)
        self.server.stats["errors_replied"] += 1
        return error_reply(exc)

    def _call_done(self, i: int, reply: bytes) -> None:
        self._slots[i] = reply
        self._in_flight -= 1
        if self._in_flight or self._starting:
            return
        slots, self._slots = self._slots, []
        self._flush(slots, self._close_after)
        if self.idle is not None and not self.idle.done():
            self.idle.set_result(None)
        self._pump()

    def _flush(self, slots: list[Any], close: bool) -> None:
        if self.closed:
            return
        if close:
            self.server.flush_outbox()  # this connection's earlier replies go first
            if slots:
                self.transport.write(b"".join(slots))  # type: ignore[union-attr]
            self._close()
        elif slots:
            self.server.send(self.transport, b"".join(slots))  # type: ignore[arg-type]

    def _close(self) -> None:
        self.closed = True
        self.queue.clear()
        if self.transport is not None:
            self.transport.close()

    def _take_group(self) -> tuple[list[Any], bool]:
        """Pop the longest run of queued steps that may run concurrently."""
        queue, slots = self.queue, []
        reads: set[bytes] = set()
        writes: set[bytes] = set()
        calls = 0
        while queue:
            step = queue[0]
            if step is _CLOSE:
                if not slots:
                    queue.popleft()
                    return slots, True
                break
            if type(step) is not bytes:
                if calls >= self.server.max_group or _conflicts(step, reads, writes):
                    break
                reads.update(step.reads)
                writes.update(step.writes)
                calls += 1
            slots.append(queue.popleft())
        return slots, False


def _start_eager(coro: Coroutine[Any, Any, bytes], done: Callable[[bytes], None],
                 failed: Callable[[BaseException], bytes]) -> None:
    """Run ``coro`` now up to its first suspension, then drive it from the callbacks of the
    futures it awaits -- what an eager Task does (Python 3.12), without a Task object.

    Most node calls that finish without waiting (a local read on a 1-node cluster) then
    cost no scheduling at all. Limits: inside, ``asyncio.current_task()`` is None (so no
    ``asyncio.timeout()``), and the coroutine cannot be cancelled from outside; node
    operations carry their own timeouts. ``done`` gets the reply, or ``failed(exc)``'s."""
    def step(_: object = None) -> None:
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            done(stop.value)
            return
        except BaseException as exc:  # every error of a command is a reply to its client
            done(failed(exc))
            return
        if yielded is None:  # a bare yield (asyncio.sleep(0)): run again next iteration
            asyncio.get_running_loop().call_soon(step)
            return
        if not hasattr(yielded, "add_done_callback"):
            coro.close()
            done(failed(RuntimeError(f"coroutine yielded {type(yielded).__name__}, not a future")))
            return
        yielded._asyncio_future_blocking = False
        yielded.add_done_callback(step)

    step()


def _conflicts(call: _Call, reads: set[bytes], writes: set[bytes]) -> bool:
    if writes and any(k in writes for k in call.reads):
        return True
    return any(k in writes or k in reads for k in call.writes)


_NOAUTH = resp.error("NOAUTH Authentication required.")
_NO_PASSWORD = resp.error("ERR AUTH <password> called without any password configured for the "
                          "default user. Are you sure your configuration is correct?")
_WRONGPASS = resp.error("WRONGPASS invalid username-password pair or user is disabled.")


def _auth_gate(password: bytes, session: Session, args: Command) -> bytes | None:
    """With a password: the reply to ``args`` if the gate answers it (AUTH, or anything
    before a successful AUTH but QUIT and HELLO ... AUTH), None to run it as usual."""
    name = args[0].upper()
    if name == b"AUTH":
        if len(args) not in (2, 3):
            return resp.error("ERR wrong number of arguments for 'auth' command")
        if _credentials_ok(password, args[1:]):
            session.authed = True
            return resp.OK
        return _WRONGPASS
    if session.authed or name == b"QUIT":
        return None
    if name == b"HELLO":
        words = [a.upper() for a in args]
        if b"AUTH" in words:
            i = words.index(b"AUTH")
            if i + 2 < len(args) and _credentials_ok(password, args[i + 1:i + 3]):
                session.authed = True
                return None  # HELLO itself runs now (it skips the AUTH words)
            return _WRONGPASS
        return resp.error("NOAUTH HELLO must be called with the client already authenticated, "
                          "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                          "authenticate the client and select the RESP protocol version at the "
                          "same time")
    return _NOAUTH


def _credentials_ok(password: bytes, creds: list[bytes]) -> bool:
    """``[password]`` or ``[user, password]`` (user ``default``, as Redis's single user)."""
    if len(creds) == 2 and creds[0] != b"default":
        return False
    return hmac.compare_digest(bytes(creds[-1]), password)


def _run_sync(spec: Spec, session: Session, args: Command) -> bytes:
    try:
        return spec.handler(session, args)
    except Exception as exc:
        if not isinstance(exc, _EXPECTED):
            log.exception("RESP %s failed", spec.name)
        return error_reply(exc)


def _unknown(args: Command) -> bytes:
    name = args[0][:128].decode("utf-8", "replace")
    rest = " ".join(f"'{a[:64].decode('utf-8', 'replace')}'" for a in args[1:8])
    return resp.error(f"ERR unknown command '{name}', with args beginning with: {rest}")


_EXPECTED = (RingkvError,)  # errors that are replies, not bugs: not logged

__all__ = ["RespServer"]
