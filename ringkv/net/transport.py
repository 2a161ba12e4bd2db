"""asyncio TCP transport for ringkv RPC: :class:`RpcServer` and the pooled :class:`RpcClient`.

Built on ``asyncio.Protocol`` (not Streams) because on the hot path the callbacks are
what a Python server can afford (docs/performance.md). Framing is :mod:`ringkv.net.frames`.

Contracts:
- Many requests in flight per connection, matched by request id; replies may come in
  any order. Responses (server) and requests (client) produced in one loop iteration are
  written with one ``transport.write`` (pipelining costs one syscall per batch).
- Server: a handler ``(method, body, peer) -> dict`` may be ``async def`` or a plain
  function returning a dict or an awaitable (a dict is the fast path: no Task). A
  RingkvError from it goes back to the caller as an error response; any other exception
  is logged and answered with a generic RingkvError. Client input never stops the server:
  an oversized frame gets ``TooLarge``, bad bytes get ``ProtocolError`` (when a reply is
  possible), then that connection alone is closed.
- Client: ``call`` raises the RingkvError the server sent, ``Timeout(1, 0)`` after the
  per-request timeout, ``Unavailable(1, 0)`` when the peer cannot be reached or the
  connection breaks with the call in flight (:func:`is_peer_unreachable` and
  :func:`is_no_reply` tell these apart from the same errors sent by the peer;
  :func:`is_outcome_unknown` marks the broken connection's calls, which the peer may have
  applied), ``TooLarge``
  before sending a frame over the limit. Broken connections are dropped from the pool and
  reopened by the next call. Request timeouts cost no timer each: a connection keeps its
  requests' deadlines in send order and one timer for the earliest
  (``_ClientProtocol.send_timed``, also used by ``ringkv.node_ops.request``).
- ``RpcServer(eager=True)``: an ``async def`` handler's coroutine starts at once, inside
  the read callback, and is driven without a Task (measured: ~25% more requests/s for a
  handler that suspends once; replies that need no IO leave in the same batch). Inside
  such a handler ``asyncio.current_task()`` is None, so ``asyncio.timeout()`` and Task
  cancellation do not apply there: run code that needs them in its own task.
- Bounded: each server connection has at most ``max_inflight`` requests being handled
  (it stops reading past that) and stops reading while its write buffer is full; a
  server holds at most ``max_connections`` connections, and answers one more with an
  ``Overloaded`` error (request id 0, about the connection) and closes it. A client that
  gets such an error fails the connection's calls with it.
- Authenticated (``secret``, D32): with a cluster secret, a server connection serves no
  request until the client has passed the handshake of :mod:`ringkv.net.auth`, and a
  client connection is pooled only once the server has proved the secret too. Anything
  else gets ``AuthenticationFailed`` and that connection alone is closed.
- Encrypted (``ssl``, D33): with an SSL context (``ringkv.net.tls``) both ends speak TLS;
  a client whose TLS handshake fails (an untrusted certificate, a peer without TLS) gets
  ``AuthenticationFailed`` naming the reason.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
import ssl as _ssl
from collections import deque
from types import CoroutineType
from typing import Any, Awaitable, Callable, Union

from ringkv.errors import (AuthenticationFailed, Closed, Overloaded, RingkvError, Timeout, Unavailable,
                           from_wire)


async def _probe() -> None:
    """Never awaited: the type of its coroutine is how this build spells one."""


def _coroutine_types() -> frozenset:
    probe = _probe()
    probe.close()
    return frozenset({CoroutineType, type(probe)})


#: The coroutine types an eager server may drive without a Task: Python's own, and the
#: Cython coroutine type when this module is compiled (D21; Cython shares one coroutine
#: type among all modules it compiled, so node handlers' coroutines are of it too).
COROUTINE_TYPES = _coroutine_types()
from ringkv.net import auth, frames
from ringkv.net.frames import ERROR, OK, REQUEST, FrameDecoder, FrameEncoder

log = logging.getLogger(__name__)

Handler = Callable[[str, dict, str], Union[dict, Awaitable[dict]]]
DEFAULT_MAX_INFLIGHT = 4096
DEFAULT_MAX_CONNECTIONS = 10_000  # as limits.max_connections
_NEVER = float("inf")
_Future = asyncio.Future
_SWEEP_EVERY = 0.25  # seconds: how long answered requests' deadline entries may linger
HANDSHAKE_TIMEOUT_S = 10.0  # with a secret: a connection not authenticated by then is closed
AUTH_LOG_EVERY_S = 60.0  # refused connections are logged at most this often per remote host


def _unreachable(detail: str) -> Unavailable:
    err = Unavailable(1, 0, detail)
    err.peer_unreachable = True  # type: ignore[attr-defined]
    return err


def _lost_in_flight(detail: str) -> Unavailable:
    """The error of a call whose connection broke after it was queued to be sent: the
    peer may have received and applied it (see :func:`is_outcome_unknown`)."""
    err = _unreachable(detail)
    err.outcome_unknown = True  # type: ignore[attr-defined]
    return err


def is_outcome_unknown(err: BaseException) -> bool:
    """True for an error this layer raised for a call that may have reached the peer and
    been applied there: its connection broke while the call was in flight. (A
    ``Timeout`` is always an unknown outcome; this covers the broken connection.)"""
    return bool(getattr(err, "outcome_unknown", False))


def is_peer_unreachable(err: BaseException) -> bool:
    """True for errors this layer raised because the peer could not be reached at all."""
    return bool(getattr(err, "peer_unreachable", False))


def is_no_reply(err: BaseException) -> bool:
    """True for a Timeout this layer raised because the peer sent no reply in time
    (as opposed to a Timeout the peer itself answered with)."""
    return bool(getattr(err, "no_reply", False))


class _Batcher:
    """Collects frames for one transport and writes them once per loop iteration."""

    __slots__ = ("transport", "loop", "_out", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._scheduled = False

    def add(self, frame: bytes) -> None:
        self._out.append(frame)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        out, self._out = self._out, []
        t = self.transport
        if out and t is not None and not t.is_closing():
            t.write(out[0] if len(out) == 1 else b"".join(out))


# ---------------------------------------------------------------- server


class _ServerProtocol(asyncio.Protocol):
    def __init__(self, server: "RpcServer") -> None:
        self.server = server
        self.loop = server._loop
        self.decoder = FrameDecoder(server.max_frame_bytes)
        self.encoder = FrameEncoder(server.max_frame_bytes)
        self.out = _Batcher(self.loop)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.inflight = 0
        self.backlog: deque[frames.Message] = deque()
        self.read_paused = False
        self.write_paused = False
        self.closing = False
        self.authed = server.secret is None  # with a secret: after the handshake (auth.py)
        self.nonce = b""  # this connection's server nonce, sent in the hello reply
        self.handshake_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.out.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        server = self.server
        if len(server._conns) >= server.max_connections:
            server.note_rejected(self.peer)
            self._fail(Overloaded(f"too many connections: this node holds at most "
                                  f"{server.max_connections} (limits.max_connections)"),
                       quiet=True)
            return
        server._conns.add(self)
        if not self.authed:
            self.nonce = secrets.token_bytes(auth.NONCE_BYTES)
            self.handshake_timer = self.loop.call_later(HANDSHAKE_TIMEOUT_S, self._handshake_expired)

    def _handshake_expired(self) -> None:
        """A connection that has not authenticated in time holds no slot for longer."""
        if not self.authed and not self.closing:
            self._refuse(AuthenticationFailed(f"no authentication handshake within "
                                              f"{HANDSHAKE_TIMEOUT_S:g}s"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.backlog.clear()
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
        self.server._conns.discard(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except RingkvError as exc:
            self._fail(exc)
            return
        for msg in messages:
            if msg[0] != REQUEST:
                self._fail(frames._tag(frames.ProtocolError("server got a non-request message"), msg[1]))
                return
        if not self.authed:
            messages = self._handshake(messages)
            if not messages:
                return
        if self.backlog or self.inflight + len(messages) > self.server.max_inflight:
            self.backlog.extend(messages)
            self._drain_backlog()
        else:
            for _kind, rid, method, body in messages:
                self._dispatch(rid, method, body)
        self._update_reading()

    def _handshake(self, messages: list) -> list:
        """Answer the handshake's requests (ringkv.net.auth); refuse anything else and
        close. Returns the messages that followed a completed handshake, to serve."""
        secret = self.server.secret
        for i, (_kind, rid, method, body) in enumerate(messages):
            if self.authed:
                return messages[i:]
            body = body if type(body) is dict else {}
            if method == auth.AUTH_HELLO and body.get("v") == auth.VERSION and self.nonce:
                self.out.add(self.encoder.ok(rid, {"v": auth.VERSION, "nonce": self.nonce}))
                continue
            client_nonce = body.get("nonce")
            if (method == auth.AUTH and self.nonce and auth.valid_nonce(client_nonce)
                    and auth.proof_matches(auth.client_proof(secret, self.nonce, client_nonce),
                                           body.get("proof"))):
                self.authed = True
                if self.handshake_timer is not None:
                    self.handshake_timer.cancel()
                proof = auth.server_proof(secret, self.nonce, client_nonce)
                self.out.add(self.encoder.ok(rid, {"proof": proof}))
                continue
            if method == auth.AUTH:
                detail = "wrong cluster secret (the proof does not match)"
            elif method == auth.AUTH_HELLO:
                detail = f"unsupported handshake version {body.get('v')!r} (this node speaks {auth.VERSION})"
            else:
                detail = f"this node requires the cluster secret before {method!r}"
            self._refuse(frames._tag(AuthenticationFailed(detail), rid))
            return []
        return []

    def _refuse(self, exc: AuthenticationFailed) -> None:
        """Answer and close like :meth:`_fail`; logged once a minute per remote host,
        since a misconfigured peer retries every gossip round."""
        self.server.note_refusal(self.peer.rpartition(":")[0] or self.peer, exc)
        self._fail(exc, quiet=True)

    def _drain_backlog(self) -> None:
        """Start queued requests while under max_inflight (the queue holds at most one read)."""
        backlog, limit = self.backlog, self.server.max_inflight
        while backlog and self.inflight < limit and not self.closing:
            _kind, rid, method, body = backlog.popleft()
            self._dispatch(rid, method, body)

    def _dispatch(self, rid: int, method: str, body: dict) -> None:
        try:
            result = self.server.handler(method, body, self.peer)
            if type(result) is dict:
                self._reply(rid, result, None)
                return
            if self.server.eager and type(result) in COROUTINE_TYPES:
                self.inflight += 1
                self._step(rid, result)
                return
            # a plain future (e.g. a node's replica write waiting for its fsync) needs no
            # ensure_future; anything else awaitable gets one
            fut = result if type(result) is _Future else asyncio.ensure_future(result)
        except Exception as exc:  # noqa: BLE001 - the server must survive any handler bug
            self._reply(rid, None, exc)
            return
        self.inflight += 1
        fut.add_done_callback(functools.partial(self._task_done, rid))

    def _step(self, rid: int, coro: CoroutineType, _waited: object = None) -> None:
        """Run an eager handler's coroutine to its next suspension, without a Task."""
        try:
            waited = coro.send(None)
        except StopIteration as stop:
            self._finished(rid, stop.value, None)
            return
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001
            self._finished(rid, None, exc)
            return
        if getattr(waited, "_asyncio_future_blocking", None):  # awaiting an asyncio future
            waited._asyncio_future_blocking = False  # type: ignore[union-attr]
            waited.add_done_callback(functools.partial(self._step, rid, coro))  # type: ignore[union-attr]
        elif waited is None:  # a bare yield, as in asyncio.sleep(0)
            self.loop.call_soon(self._step, rid, coro)
        else:
            coro.close()
            self._finished(rid, None, RuntimeError(f"eager handler yielded {waited!r}"))

    def _task_done(self, rid: int, fut: asyncio.Future) -> None:
        if fut.cancelled():
            self._finished(rid, None, Closed("request cancelled: server shutting down"))
        else:
            exc = fut.exception()
            self._finished(rid, None if exc else fut.result(), exc)

    def _finished(self, rid: int, result: Any, exc: BaseException | None) -> None:
        self.inflight -= 1
        self._reply(rid, result, exc)
        if self.backlog:
            self._drain_backlog()
        self._update_reading()

    def _reply(self, rid: int, result: Any, exc: BaseException | None) -> None:
        if self.closing:
            return
        if exc is None and type(result) is not dict:
            exc = TypeError(f"handler returned {type(result).__name__}, not dict")
        if exc is not None and not isinstance(exc, RingkvError):
            log.error("rpc handler failed (peer %s)", self.peer, exc_info=exc)
            exc = RingkvError(f"internal error: {type(exc).__name__}")
        try:
            frame = self.encoder.error(rid, exc) if exc else self.encoder.ok(rid, result)
        except RingkvError as enc_exc:  # reply too large or not encodable
            frame = self.encoder.error(rid, enc_exc)
        self.out.add(frame)

    def _fail(self, exc: RingkvError, quiet: bool = False) -> None:
        """Answer a framing error where possible and close this connection after the reply."""
        if self.closing:
            return
        if not quiet:
            log.warning("closing rpc connection from %s: %s: %s", self.peer, type(exc).__name__, exc)
        self.out.add(self.encoder.error(getattr(exc, "request_id", 0), exc))
        self.out.flush()
        self.closing = True
        if self.transport is not None:
            self.transport.close()  # flushes the buffered reply first

    def _update_reading(self) -> None:
        t = self.transport
        if t is None or self.closing:
            return
        busy = self.write_paused or bool(self.backlog) or self.inflight >= self.server.max_inflight
        if busy and not self.read_paused:
            self.read_paused = True
            t.pause_reading()
        elif not busy and self.read_paused and self.inflight <= self.server.max_inflight // 2:
            self.read_paused = False
            t.resume_reading()


class RpcServer:
    """Serves ringkv RPC on one TCP address. ``await start()``, then ``await close()``.
    With ``secret``, every connection must pass the handshake first (D32); with ``ssl``
    (a server context from ``ringkv.net.tls``), every connection is TLS (D33)."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0,
                 max_frame_bytes: int = frames.DEFAULT_MAX_FRAME_BYTES, *,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT, eager: bool = False,
                 secret: bytes | None = None, ssl: _ssl.SSLContext | None = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self.handler = handler
        self.ssl = ssl
        self.secret = auth.check_secret(secret, "secret") if secret is not None else None
        self.eager = eager
        self.host, self.port = host, port
        self.max_frame_bytes = max_frame_bytes
        self.max_inflight = max_inflight
        self.max_connections = max_connections
        self.rejected_connections = 0  # connections refused past max_connections, in all
        self._rejections_logged_at = -_NEVER
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_ServerProtocol] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.auth_refusals = 0  # connections refused for the secret (D32), in all
        self._refusals_logged: dict[str, tuple[float, int]] = {}  # host -> (next log time, unlogged)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._conns)

    def note_rejected(self, peer: str) -> None:
        """Count a connection refused past ``max_connections``; logged once a minute."""
        self.rejected_connections += 1
        now = self._loop.time() if self._loop is not None else 0.0
        if now - self._rejections_logged_at >= AUTH_LOG_EVERY_S:
            self._rejections_logged_at = now
            log.warning("refused rpc connection from %s: %d connections open, the most "
                        "limits.max_connections allows (%d refused in all)", peer,
                        len(self._conns), self.rejected_connections)

    def note_refusal(self, host: str, exc: AuthenticationFailed) -> None:
        """Count a refused connection; log it unless ``host`` was logged in the last minute."""
        self.auth_refusals += 1
        now = self._loop.time() if self._loop is not None else 0.0
        next_at, unlogged = self._refusals_logged.get(host, (0.0, 0))
        if now < next_at:
            self._refusals_logged[host] = (next_at, unlogged + 1)
            return
        if len(self._refusals_logged) > 1024:  # bounded: forget the hosts seen long ago
            self._refusals_logged.clear()
        self._refusals_logged[host] = (now + AUTH_LOG_EVERY_S, 0)
        more = f" ({unlogged} more refused since the last report)" if unlogged else ""
        log.warning("refused rpc connection from %s: AuthenticationFailed: %s%s", host, exc, more)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> "RpcServer":
        """Bind and listen; with port 0 the chosen port is stored in ``self.port``."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: _ServerProtocol(self), self.host, self.port, reuse_address=True, backlog=1024,
            ssl=self.ssl, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if self.ssl else None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and close every connection (in-flight handlers are not awaited)."""
        if self._server is None:
            return
        self._server.close()
        for conn in list(self._conns):
            conn.out.flush()
            if conn.transport is not None:
                conn.transport.close()
        self._conns.clear()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> "RpcServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# ---------------------------------------------------------------- client


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, peer: str, max_frame_bytes: int, loop: asyncio.AbstractEventLoop) -> None:
        self.peer = peer
        self.loop = loop
        self.decoder = FrameDecoder(max_frame_bytes)
        self.encoder = FrameEncoder(max_frame_bytes)
        self.out = _Batcher(loop)
        self.pending: dict[int, asyncio.Future] = {}
        self.ids = itertools.count(1)
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.failure: RingkvError | None = None  # why, once lost (_fail_all sets both)
        self.answered = False  # any bytes from the peer yet (see connection_lost)
        # Request timeouts without a timer per request: per distinct timeout, the
        # (deadline, rid, method) of each request in send order (so deadlines ascend),
        # and one timer for the earliest deadline still pending (see _sweep).
        self._deadlines: dict[float, deque[tuple[float, int, str]]] = {}
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._sweep_at = _NEVER

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.out.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        why = f"connection to {self.peer} lost" + (f": {exc}" if exc else "")
        if self.pending and not self.answered and self.transport is not None \
                and self.transport.get_extra_info("ssl_object") is None:
            # Why the hint: a TLS port closes a plaintext connection without a byte it could
            # read (measured: no alert comes back), so this is all the client ever sees.
            why += (" before any reply; a node that serves TLS closes plaintext connections "
                    "like this: if the cluster uses TLS, give the client its CA (Client(ssl="
                    "ringkv.net.tls.client_context(ca_file)), or RINGKV_TLS_CA_FILE for the CLI)")
        self._fail_all(_unreachable(why), _lost_in_flight(why + "; the request was in flight "
                                                        "and may have been applied"))

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            messages = self.decoder.feed(data)
        except RingkvError as exc:
            self._fail_all(exc)
            return
        pending = self.pending
        for kind, rid, _code, body in messages:
            fut = pending.pop(rid, None)
            if fut is None or fut.done():
                if rid == 0 and kind == ERROR:  # about the connection (the server closes it)
                    self._fail_all(_error_from_body(body))
                    return
                continue  # timed out or cancelled meanwhile
            if kind == OK:
                fut.set_result(body)
            elif kind == ERROR:
                fut.set_exception(_error_from_body(body))
            else:
                self._fail_all(frames.ProtocolError("client got a request message"))
                return

    def _fail_all(self, exc: RingkvError, in_flight: RingkvError | None = None) -> None:
        """Fail the connection with ``exc`` (kept for calls sent after it broke) and every
        pending call with ``in_flight`` if given (they may have reached the peer), else
        with ``exc``."""
        if not self.lost:
            self.lost = True
            self.failure = exc
            if self.transport is not None:
                self.transport.close()
        pending, self.pending = self.pending, {}
        self._deadlines.clear()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle, self._sweep_at = None, _NEVER
        err = exc if in_flight is None else in_flight
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(err)

    def send(self, method: str, body: dict) -> tuple[int, asyncio.Future]:
        """Queue one request; its id and the future of the reply (no timeout)."""
        rid = next(self.ids)
        frame = self.encoder.request(rid, method, body)
        fut = self.loop.create_future()
        if self.lost:  # e.g. refused with its first bytes, before the caller got to send
            fut.set_exception(self.failure or _unreachable(f"connection to {self.peer} lost"))
            return rid, fut
        self.pending[rid] = fut
        self.out.add(frame)
        return rid, fut

    def send_timed(self, method: str, body: dict, timeout: float | None) -> tuple[int, asyncio.Future]:
        """:meth:`send` whose future fails with ``Timeout`` (``no_reply``) once ``timeout``
        seconds passed without a reply (None: never). No timer per request: a request
        costs one deque entry, dropped lazily once answered."""
        rid, fut = self.send(method, body)
        if timeout is not None:
            deadline = self.loop.time() + timeout
            queue = self._deadlines.get(timeout)
            if queue is None:
                queue = self._deadlines[timeout] = deque()
            queue.append((deadline, rid, method))
            if deadline < self._sweep_at:
                self._schedule_sweep(deadline)
        return rid, fut

    def _schedule_sweep(self, when: float) -> None:
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        self._sweep_at = when
        self._sweep_handle = self.loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        """Expire the requests past their deadline; forget the answered ones; re-arm for
        the earliest deadline still pending, and at least every _SWEEP_EVERY seconds
        while requests are queued, so answered entries do not pile up."""
        self._sweep_handle, self._sweep_at = None, _NEVER
        now = self.loop.time()
        pending = self.pending
        earliest = _NEVER
        for timeout, queue in list(self._deadlines.items()):
            while queue:
                deadline, rid, method = queue[0]
                if rid in pending:
                    if deadline > now:
                        break
                    fut = pending.pop(rid)
                    if not fut.done():
                        err = Timeout(1, 0, f"{method} to {self.peer}: no reply in {timeout:g}s")
                        err.no_reply = True  # type: ignore[attr-defined]
                        fut.set_exception(err)
                queue.popleft()
            if queue:
                earliest = min(earliest, queue[0][0])
            else:
                del self._deadlines[timeout]
        if self._deadlines:
            self._schedule_sweep(min(earliest, now + _SWEEP_EVERY))


def _error_from_body(body: Any) -> RingkvError:
    """The RingkvError carried by an error response body."""
    return from_wire(body if isinstance(body, dict) else {"message": repr(body)})


class RpcClient:
    """Calls ringkv RPC methods on many peers over a pool of persistent connections.

    Keeps ``connections_per_peer`` connections per (host, port), used round-robin; a
    connection that breaks is dropped and reopened on the next call. One RpcClient
    belongs to one event loop. With ``secret``, each new connection runs the handshake
    (D32) before its first request; a peer that fails it raises ``AuthenticationFailed``.
    With ``ssl`` (a client context from ``ringkv.net.tls``), connections are TLS (D33).
    """

    def __init__(self, max_frame_bytes: int = frames.DEFAULT_MAX_FRAME_BYTES, *,
                 connect_timeout: float = 2.0, connections_per_peer: int = 1,
                 secret: bytes | None = None, ssl: _ssl.SSLContext | None = None) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.ssl = ssl
        self.secret = auth.check_secret(secret, "secret") if secret is not None else None
        self.connect_timeout = connect_timeout
        self.connections_per_peer = max(1, connections_per_peer)
        self._pool: dict[tuple[str, int], list[_ClientProtocol | None]] = {}
        self._connecting: dict[tuple[str, int, int], asyncio.Future] = {}
        self._rr = itertools.count()
        self._closed = False

    async def call(self, host: str, port: int, method: str, body: dict,
                   timeout: float | None = 2.0) -> dict:
        """Send one request and wait for its reply; raises RingkvError (see module doc).
        ``timeout``: seconds to wait for the reply once sent (None: no limit); connecting
        is bounded by ``connect_timeout``."""
        slots = self._pool.get((host, port))
        i = next(self._rr) % self.connections_per_peer if self.connections_per_peer > 1 else 0
        conn = slots[i] if slots else None
        if conn is None or conn.lost:
            conn = await self._connect(host, port, i)
        rid, fut = conn.send_timed(method, body, timeout)
        try:
            return await fut
        finally:
            if not fut.done() or fut.cancelled():  # the caller was cancelled
                conn.pending.pop(rid, None)

    async def _connect(self, host: str, port: int, i: int) -> _ClientProtocol:
        if self._closed:
            raise Closed("rpc client is closed")
        self._pool.setdefault((host, port), [None] * self.connections_per_peer)
        key = (host, port, i)
        waiter = self._connecting.get(key)
        if waiter is None:
            waiter = asyncio.ensure_future(self._open(host, port))
            self._connecting[key] = waiter
            waiter.add_done_callback(lambda f: self._connected(key, f))
        return await asyncio.shield(waiter)

    def _connected(self, key: tuple[str, int, int], fut: asyncio.Future) -> None:
        self._connecting.pop(key, None)
        if fut.cancelled() or fut.exception() is not None:
            return
        slots = self._pool.get(key[:2])
        if slots is None or self._closed:
            conn = fut.result()
            if conn.transport is not None:
                conn.transport.close()
            return
        slots[key[2]] = fut.result()

    async def _open(self, host: str, port: int) -> _ClientProtocol:
        loop = asyncio.get_running_loop()
        peer = f"{host}:{port}"
        try:
            _, proto = await asyncio.wait_for(loop.create_connection(
                lambda: _ClientProtocol(peer, self.max_frame_bytes, loop), host, port,
                ssl=self.ssl, server_hostname=host if self.ssl is not None else None),
                self.connect_timeout)
        except asyncio.TimeoutError:
            raise _unreachable(f"connect to {peer} timed out") from None
        except _ssl.SSLCertVerificationError as exc:
            raise AuthenticationFailed(f"TLS: the certificate of {peer} is not trusted: "
                                       f"{exc.verify_message or exc.reason}") from None
        except _ssl.SSLError as exc:
            raise AuthenticationFailed(f"TLS handshake with {peer} failed: {exc.reason or exc} "
                                       "(does it serve TLS, and trust our certificate?)") from None
        except OSError as exc:
            raise _unreachable(f"cannot connect to {peer}: {exc.strerror or exc}") from None
        if self.secret is not None:
            try:
                await self._handshake(proto, peer, self.secret)
            except BaseException:
                if proto.transport is not None:
                    proto.transport.close()
                raise
        return proto

    async def _handshake(self, proto: _ClientProtocol, peer: str, secret: bytes) -> None:
        """Prove the secret to ``peer`` and check its proof (ringkv.net.auth)."""
        try:
            hello = await proto.send_timed(auth.AUTH_HELLO, {"v": auth.VERSION}, self.connect_timeout)[1]
            server_nonce = hello.get("nonce") if type(hello) is dict else None
            if not auth.valid_nonce(server_nonce):
                raise AuthenticationFailed(f"{peer} does not authenticate with a cluster secret "
                                           "(its reply to the handshake holds no nonce)")
            nonce = secrets.token_bytes(auth.NONCE_BYTES)
            body = {"nonce": nonce, "proof": auth.client_proof(secret, server_nonce, nonce)}
            reply = await proto.send_timed(auth.AUTH, body, self.connect_timeout)[1]
        except AuthenticationFailed:
            raise
        except Timeout:
            raise _unreachable(f"authentication handshake with {peer} timed out") from None
        except RingkvError as exc:
            if is_peer_unreachable(exc):
                raise
            raise AuthenticationFailed(f"{peer} does not authenticate with a cluster secret "
                                       f"(it answered: {exc})") from None
        proof = reply.get("proof") if type(reply) is dict else None
        if not auth.proof_matches(auth.server_proof(secret, server_nonce, nonce), proof):
            raise AuthenticationFailed(f"{peer} does not know the cluster secret (its proof "
                                       "does not match)")

    def drop(self, host: str, port: int) -> None:
        """Close the connections to one peer (the next call reconnects)."""
        for conn in self._pool.pop((host, port), []):
            if conn is not None and conn.transport is not None:
                conn.transport.close()

    async def close(self) -> None:
        """Close every connection; calls in flight fail with Unavailable."""
        self._closed = True
        for host, port in list(self._pool):
            self.drop(host, port)
        for waiter in list(self._connecting.values()):
            waiter.cancel()
        await asyncio.sleep(0)  # let transports run connection_lost

    async def __aenter__(self) -> "RpcClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _expire(conn: _ClientProtocol, rid: int, fut: asyncio.Future, method: str,
            timeout: float) -> None:
    """Fail one request with a no-reply Timeout (for callers that keep their own timer)."""
    conn.pending.pop(rid, None)
    if not fut.done():
        err = Timeout(1, 0, f"{method} to {conn.peer}: no reply in {timeout:g}s")
        err.no_reply = True  # type: ignore[attr-defined]
        fut.set_exception(err)


__all__ = ["RpcServer", "RpcClient", "Handler", "is_peer_unreachable", "is_no_reply",
           "is_outcome_unknown"]
