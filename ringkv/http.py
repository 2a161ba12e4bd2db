"""The HTTP/JSON API of a node (aiohttp): ``/kv/<key>``, ``/status``, ``/ring``, ``/metrics``.

The API is documented in docs/http.md; in short:

- ``GET /kv/<key>[?r=LEVEL]`` -> 200 ``{"key", "values": [base64], "context": base64,
  "siblings": n}``, 404 with the same body when there is no live value. With
  ``Accept: application/octet-stream``: one value -> 200 with the raw bytes, siblings ->
  300 Multiple Choices with the JSON body, none -> 404. The context is also in the
  ``X-Ringkv-Context`` response header (base64).
- ``PUT /kv/<key>[?w=LEVEL&ttl=S]``, body = the raw value, ``X-Ringkv-Context`` = the
  context of the read it supersedes -> 200 ``{"context"}``.
- ``DELETE /kv/<key>[?w=LEVEL]`` with ``X-Ringkv-Context`` -> 200 ``{}``.
- Errors: JSON ``{"error": code, "message", "fields"}``; 400 InvalidRequest, 401
  AuthenticationFailed, 413 TooLarge, 429 Overloaded, 503 Unavailable/Closed, 504
  Timeout, 507 StorageFull, 500 otherwise.
- With a cluster secret (``security.secret_file``, D41) every request needs
  ``Authorization: Bearer <secret>``; without it, or with another one, 401 and
  ``WWW-Authenticate: Bearer realm="ringkv"``.

The key is the URL path after ``/kv/``, percent-decoded to bytes (any byte is allowed).
The port holds at most ``limits.max_connections`` connections; one more gets a 503 with
an ``Overloaded`` body and is closed (:class:`_CappedSite`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
from functools import partial
from typing import Any, Awaitable, Callable
from urllib.parse import unquote_to_bytes

from aiohttp import web

from ringkv import metrics
from ringkv.errors import InvalidRequest, RingkvError, TooLarge

CONTEXT_HEADER = "X-Ringkv-Context"
_STATUS = {"InvalidRequest": 400, "ProtocolError": 400, "AuthenticationFailed": 401,
           "TooLarge": 413, "Overloaded": 429,
           "Unavailable": 503, "Closed": 503, "Timeout": 504, "StorageFull": 507}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_app(node: Any) -> web.Application:
    """The aiohttp application serving ``node``."""
    limits = node.limits
    secret = getattr(node, "secret", None)
    middlewares = [_errors] if secret is None else [_errors, _authenticated(secret)]
    app = web.Application(client_max_size=limits.max_value_bytes + 64 * 1024,
                          middlewares=middlewares)
    registry = metrics.registry_for(node)
    app.router.add_route("GET", "/kv/{key:.+}", partial(_get, node))
    app.router.add_route("PUT", "/kv/{key:.+}", partial(_put, node))
    app.router.add_route("POST", "/kv/{key:.+}", partial(_put, node))
    app.router.add_route("DELETE", "/kv/{key:.+}", partial(_delete, node))
    app.router.add_get("/status", partial(_status, node))
    app.router.add_get("/ring", partial(_ring, node))
    app.router.add_get("/metrics", partial(_metrics, registry))
    return app


async def start_http(node: Any, host: str, port: int, ssl_context: Any = None,
                     max_connections: int = 10_000) -> web.AppRunner:
    """Serve the API on host:port (HTTPS with ``ssl_context``), holding at most
    ``max_connections`` connections (limits.max_connections); returns the runner
    (``await runner.cleanup()`` to stop)."""
    runner = web.AppRunner(make_app(node), access_log=None)
    await runner.setup()
    await _CappedSite(runner, host, port, max_connections, node.counters, reuse_address=True,
                      ssl_context=ssl_context).start()
    return runner


_FULL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")


class _CappedSite(web.TCPSite):
    """aiohttp's TCP site with a bound on open connections: one more is answered 503
    (Overloaded) and closed, as the RPC and RESP ports do (aiohttp has no such bound)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, max_connections: int,
                 counters: dict, **kw: Any) -> None:
        super().__init__(runner, host, port, **kw)
        self._max_connections, self._counters = max_connections, counters

    async def start(self) -> None:
        # TCPSite.start with a factory that counts; it reads TCPSite's private fields, as
        # the aiohttp pinned in pyproject.toml (3.14) has them (test_connection_limit.py)
        await web.BaseSite.start(self)
        handlers = self._runner.server
        assert handlers is not None
        body = json.dumps({"error": "Overloaded", "fields": {},
                           "message": f"overloaded: too many connections: this node holds at "
                                      f"most {self._max_connections} (limits.max_connections)"
                           }).encode()
        refusal = _FULL % (len(body), body)

        def factory() -> asyncio.BaseProtocol:
            if len(handlers.connections) >= self._max_connections:
                self._counters["http_rejected_connections"] = \
                    self._counters.get("http_rejected_connections", 0) + 1
                return _Refuse(refusal)
            return handlers()

        self._server = await asyncio.get_running_loop().create_server(
            factory, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


class _Refuse(asyncio.Protocol):
    """Writes one canned response and closes (for a connection over the bound)."""

    def __init__(self, response: bytes) -> None:
        self.response = response

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.response)  # type: ignore[attr-defined]
        transport.close()


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RingkvError as exc:
        return _json({"error": type(exc).__name__, "message": str(exc), "fields": exc.fields()},
                     status=_STATUS.get(type(exc).__name__, 500))


def _authenticated(secret: bytes) -> Any:
    """A middleware refusing requests that do not carry ``secret`` as their bearer token."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), secret):
            return await handler(request)
        why = ("wrong cluster secret in the Authorization header" if token else
               "this node requires the cluster secret: send 'Authorization: Bearer <secret>'")
        response = _json({"error": "AuthenticationFailed",
                          "message": f"authentication failed: {why}", "fields": {}}, status=401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="ringkv"'
        return response

    return middleware


async def _get(node: Any, request: web.Request) -> web.StreamResponse:
    key = _key(request)
    values, ctx = await node.get(key, request.query.get("r"))
    headers = {CONTEXT_HEADER: b64(ctx)}
    body = {"key": key.decode("utf-8", "replace"), "values": [b64(v) for v in values],
            "context": b64(ctx), "siblings": len(values)}
    if "application/octet-stream" in request.headers.get("Accept", ""):
        if len(values) == 1:
            return web.Response(body=values[0], headers=headers,
                                content_type="application/octet-stream")
        if not values:
            return web.Response(status=404, headers=headers)
        return _json(body, status=300, headers=headers)
    return _json(body, status=200 if values else 404, headers=headers)


async def _put(node: Any, request: web.Request) -> web.StreamResponse:
    key = _key(request)
    limit = node.limits.max_value_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge("value", request.content_length, limit)
    value = await request.read()
    if len(value) > limit:
        raise TooLarge("value", len(value), limit)
    ttl = request.query.get("ttl")
    try:
        ttl_s = float(ttl) if ttl is not None else None
    except ValueError:
        raise InvalidRequest(f"ttl must be a number of seconds, not {ttl!r}") from None
    ctx = await node.put(key, value, _context(request), request.query.get("w"), ttl_s)
    return _json({"context": b64(ctx)}, headers={CONTEXT_HEADER: b64(ctx)})


async def _delete(node: Any, request: web.Request) -> web.StreamResponse:
    await node.delete(_key(request), _context(request), request.query.get("w"))
    return _json({})


def _key(request: web.Request) -> bytes:
    raw = request.rel_url.raw_path
    key = unquote_to_bytes(raw[len("/kv/"):]) if raw.startswith("/kv/") else b""
    if not key:
        raise InvalidRequest("key must not be empty")
    return key  # the node checks it against limits.max_key_bytes


def _context(request: web.Request) -> bytes | None:
    header = request.headers.get(CONTEXT_HEADER)
    if not header:
        return None
    try:
        return base64.b64decode(header, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{CONTEXT_HEADER} is not base64") from None


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, headers=headers,
                        content_type="application/json")


async def _status(node: Any, request: web.Request) -> web.Response:
    return _json(node.status())


async def _ring(node: Any, request: web.Request) -> web.Response:
    return _json(node.ring_info())


async def _metrics(registry: Any, request: web.Request) -> web.Response:
    return web.Response(body=metrics.render(registry),
                        headers={"Content-Type": metrics.CONTENT_TYPE})


__all__ = ["make_app", "start_http", "CONTEXT_HEADER"]
