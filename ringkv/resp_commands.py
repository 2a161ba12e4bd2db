"""What each Redis command means on ringkv: the command table behind :mod:`ringkv.resp_server`.

A command is a :class:`Spec`: its Redis arity, whether it calls the node (``is_async``),
which keys it reads and writes (the server runs pipelined commands concurrently only when
their keys do not conflict), and a handler returning the encoded reply. Sync handlers
never do IO; async handlers call the node's ops:

    async ops.kv_get(key, level) -> (values: list[bytes], context: bytes)
    async ops.kv_put(key, value, context: bytes | None, level, ttl: float | None) -> context
    async ops.kv_delete(key, context: bytes | None, level) -> None

A put or delete whose context is ``None`` supersedes every version the coordinating
replica holds (the node's rule): that is how a plain ``SET`` overwrites in one round trip.

Semantics that differ from Redis (docs/resp.md says more):
- ringkv keeps concurrent writes as *siblings*. ``GET`` of a key with several live values
  replies ``-SIBLINGS <n> siblings for this key; use RINGKV.GETALL`` (and ``MGET`` puts that
  error in the key's slot); ``RINGKV.GETALL``/``RINGKV.PUT``/``RINGKV.DEL`` expose
  contexts so a client can resolve them.
- ``SET`` is a put without a context: it replaces what the coordinating replica holds.
  ``NX``/``XX``/``GET`` first read the key, then put with the context read; that is a
  read-then-write, not atomic across the cluster: a concurrent writer can slip in between.
- ``DEL`` and ``EXISTS`` read first; ``DEL`` counts the keys that had a live value.
- ``MSET``/``MGET``/``DEL`` of many keys run per key, concurrently: not atomic.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from ringkv.config import LimitsConfig
from ringkv.errors import InvalidRequest, RingkvError, TooLarge
from ringkv.net import resp
from ringkv.net.resp import Command

Keys = Callable[[Command], tuple[list[bytes], list[bytes]]]


class KvOps(Protocol):
    """The node as the RESP front end sees it (``Node.get/put/delete`` have these shapes)."""

    async def kv_get(self, key: bytes, level: str | None) -> tuple[list[bytes], bytes]: ...

    async def kv_put(self, key: bytes, value: bytes, context: bytes | None, level: str | None,
                     ttl: float | None) -> bytes: ...

    async def kv_delete(self, key: bytes, context: bytes | None, level: str | None) -> None: ...


class Session:
    """Per-connection state."""

    __slots__ = ("id", "name", "read_level", "write_level", "closing", "peer", "proto", "nil",
                 "nil_array", "authed")

    def __init__(self, conn_id: int, peer: str = "") -> None:
        self.id, self.peer = conn_id, peer
        self.authed = True  # False until AUTH when the server has a password (resp_server)
        self.name = b""
        self.read_level: str | None = None  # None = the node's default
        self.write_level: str | None = None
        self.closing = False
        self.set_proto(2)

    def set_proto(self, proto: int) -> None:
        """RESP2 (default) or RESP3 after ``HELLO 3``: only nulls and maps differ in what we send."""
        self.proto = proto
        self.nil = resp.NULL3 if proto == 3 else resp.NIL
        self.nil_array = resp.NULL3 if proto == 3 else resp.NIL_ARRAY


@dataclass(frozen=True)
class Spec:
    name: str
    arity: int  # Redis convention: n = exactly n words, -n = at least n
    handler: Callable[..., Any]  # (session, args) -> bytes, or async -> bytes
    is_async: bool = False
    keys: Keys | None = None
    flags: tuple[str, ...] = ()


def _no_keys(args: Command) -> tuple[list[bytes], list[bytes]]:
    return [], []


def _read1(args: Command) -> tuple[list[bytes], list[bytes]]:
    return [args[1]], []


def _write1(args: Command) -> tuple[list[bytes], list[bytes]]:
    return [], [args[1]]


def _read_all(args: Command) -> tuple[list[bytes], list[bytes]]:
    return args[1:], []


def _write_all(args: Command) -> tuple[list[bytes], list[bytes]]:
    return [], args[1:]


def _write_pairs(args: Command) -> tuple[list[bytes], list[bytes]]:
    return [], args[1::2]


def error_reply(exc: BaseException) -> bytes:
    """The Redis-style error line for an exception raised by a command."""
    if isinstance(exc, TooLarge):
        return resp.error(f"TOOLARGE {exc}")
    if isinstance(exc, InvalidRequest):
        return resp.error(f"ERR {exc}")
    if isinstance(exc, RingkvError):
        code = type(exc).__name__.upper()
        return resp.error(f"{code} {exc}")
    return resp.error(f"ERR internal error: {type(exc).__name__}")


def _syntax() -> InvalidRequest:
    return InvalidRequest("syntax error")


def _int_arg(raw: bytes, what: str = "value") -> int:
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(f"{what} is not an integer or out of range") from None


class Commands:
    """The command table, bound to one node's ops, limits and stats."""

    def __init__(self, ops: Any, limits: LimitsConfig, info: Callable[[], dict],
                 stats: dict[str, int], port: int = 0) -> None:
        self.ops, self.limits, self.info, self.stats = ops, limits, info, stats
        self.port = port
        self.started = time.time()
        self.table: dict[bytes, Spec] = {s.name.upper().encode(): s for s in self._specs()}
        # the pipelined hot path (resp_server): plain GET and SET, when the node offers it
        self.get_spec, self.set_spec = self.table[b"GET"], self.table[b"SET"]
        self._get_many = getattr(ops, "kv_get_many", None)
        self._put_blind_many = getattr(ops, "kv_put_blind_many", None)

    def lookup(self, name: bytes) -> Spec | None:
        return self.table.get(name) or self.table.get(name.upper())

    def _specs(self) -> list[Spec]:
        ro, wr, fast = ("readonly", "fast"), ("write",), ("fast",)
        return [
            Spec("ping", -1, self.ping, flags=fast), Spec("echo", 2, self.echo, flags=fast),
            Spec("quit", -1, self.quit, flags=fast), Spec("select", 2, self.select, flags=fast),
            Spec("info", -1, self.info_cmd), Spec("command", -1, self.command),
            Spec("client", -2, self.client), Spec("config", -2, self.config),
            Spec("hello", -1, self.hello, flags=fast), Spec("time", 1, self.time_cmd, flags=fast),
            Spec("reset", 1, self.reset, flags=fast),
            Spec("get", 2, self.get, True, _read1, ro),
            Spec("set", -3, self.set, True, _write1, wr),
            Spec("del", -2, self.delete, True, _write_all, wr),
            Spec("exists", -2, self.exists, True, _read_all, ro),
            Spec("mget", -2, self.mget, True, _read_all, ro),
            Spec("mset", -3, self.mset, True, _write_pairs, wr),
            Spec("ringkv.getall", -2, self.getall, True, _read1, ro),
            Spec("ringkv.put", -4, self.put, True, _write1, wr),
            Spec("ringkv.del", -3, self.ringkv_del, True, _write1, wr),
            Spec("ringkv.level", -1, self.level, flags=fast),
        ]

    # ------------------------------------------------------------------ connection and server

    def ping(self, s: Session, args: Command) -> bytes:
        if len(args) > 2:
            raise InvalidRequest("wrong number of arguments for 'ping' command")
        return resp.bulk(args[1]) if len(args) == 2 else resp.PONG

    def echo(self, s: Session, args: Command) -> bytes:
        return resp.bulk(args[1])

    def quit(self, s: Session, args: Command) -> bytes:
        s.closing = True
        return resp.OK

    def reset(self, s: Session, args: Command) -> bytes:
        s.name, s.read_level, s.write_level = b"", None, None
        s.set_proto(2)
        return resp.simple("RESET")

    def select(self, s: Session, args: Command) -> bytes:
        if args[1] != b"0":
            raise InvalidRequest("DB index is out of range (ringkv has one keyspace: 0)")
        return resp.OK

    def time_cmd(self, s: Session, args: Command) -> bytes:
        now = time.time()
        return resp.bulk_array([b"%d" % int(now), b"%d" % int((now % 1) * 1e6)])

    def hello(self, s: Session, args: Command) -> bytes:
        """HELLO [2|3] [SETNAME name]. RESP3 is offered because redis-py 8 asks for it by
        default; ringkv sends RESP3 nulls and maps then, and RESP2 types otherwise."""
        if len(args) > 1 and args[1] not in (b"2", b"3"):
            return resp.error("NOPROTO sorry, this protocol version is not supported")
        for i, word in enumerate(args[2:], 2):
            if word.upper() == b"SETNAME" and i + 1 < len(args):
                s.name = args[i + 1]  # (HELLO's AUTH user pass is the server's: resp_server)
        if len(args) > 1:
            s.set_proto(int(args[1]))
        return resp.encode_map({"server": "redis", "version": "7.0.0", "proto": s.proto,
                                "id": s.id, "mode": "standalone", "role": "master",
                                "modules": []}, s.proto)

    def info_cmd(self, s: Session, args: Command) -> bytes:
        wanted = {a.decode("ascii", "replace").lower() for a in args[1:]}
        sections = _info_sections(self, wanted)
        return resp.bulk("\r\n".join(sections).encode())

    def command(self, s: Session, args: Command) -> bytes:
        sub = args[1].upper() if len(args) > 1 else b""
        if sub == b"":
            return resp.array([_command_entry(spec) for spec in self.table.values()])
        if sub == b"COUNT":
            return resp.integer(len(self.table))
        if sub == b"LIST":
            return resp.bulk_array([spec.name.encode() for spec in self.table.values()])
        if sub == b"INFO":
            specs = [self.lookup(n) for n in args[2:]] if len(args) > 2 else list(self.table.values())
            return resp.array([_command_entry(x) if x else s.nil_array for x in specs])
        if sub == b"DOCS":
            return resp.encode_map({}, s.proto)
        raise InvalidRequest(f"unknown subcommand '{args[1].decode('utf-8', 'replace')}'")

    def client(self, s: Session, args: Command) -> bytes:
        sub = args[1].upper()
        if sub == b"SETNAME" and len(args) == 3:
            if b" " in args[2]:
                raise InvalidRequest("Client names cannot contain spaces, newlines or special characters.")
            s.name = args[2]
            return resp.OK
        if sub == b"GETNAME":
            return resp.bulk(s.name) if s.name else s.nil
        if sub == b"ID":
            return resp.integer(s.id)
        if sub in (b"INFO", b"LIST"):
            line = f"id={s.id} addr={s.peer} name={s.name.decode('utf-8', 'replace')} db=0\n"
            return resp.bulk(line.encode())
        if sub in (b"SETINFO", b"REPLY", b"NO-EVICT", b"NO-TOUCH", b"MAINT_NOTIFICATIONS"):
            return resp.OK
        raise InvalidRequest(f"CLIENT {args[1].decode('utf-8', 'replace')} is not supported by ringkv")

    def config(self, s: Session, args: Command) -> bytes:
        sub = args[1].upper()
        if sub == b"GET":
            found: dict[str, str] = {}
            for pattern in args[2:]:
                for name, value in _CONFIG.items():
                    if fnmatch.fnmatchcase(name, pattern.decode("utf-8", "replace").lower()):
                        found[name] = value
            return resp.encode_map(found, s.proto)
        if sub == b"RESETSTAT":
            return resp.OK
        raise InvalidRequest(f"CONFIG {args[1].decode('utf-8', 'replace')} is not supported by ringkv")

    def level(self, s: Session, args: Command) -> bytes:
        """RINGKV.LEVEL [read write]: per-connection consistency levels ("-" = node default)."""
        if len(args) == 3:
            s.read_level, s.write_level = (None if a == b"-" else a.decode("ascii", "replace").upper()
                                           for a in args[1:])
        elif len(args) != 1:
            raise InvalidRequest("usage: RINGKV.LEVEL [read_level write_level]")
        return resp.bulk_array([(s.read_level or "-").encode(), (s.write_level or "-").encode()])

    # ------------------------------------------------------------------ key-value

    def _key(self, key: bytes) -> bytes:
        if len(key) > self.limits.max_key_bytes:
            raise TooLarge("key", len(key), self.limits.max_key_bytes)
        return key

    def _value(self, value: bytes) -> bytes:
        if len(value) > self.limits.max_value_bytes:
            raise TooLarge("value", len(value), self.limits.max_value_bytes)
        return value

    async def get(self, s: Session, args: Command) -> bytes:
        values, _ = await self.ops.kv_get(self._key(args[1]), s.read_level)
        return _single(values, s.nil)

    def get_many(self, s: Session, cmds: list[Command]) -> list[Any]:
        """Plain ``GET key`` commands of one pipelined group, answered at once where the
        node can without waiting (``ops.kv_get_many``: it is the key's only replica).

        Per command: its reply, an exception (its error reply) or None (run :meth:`get`)."""
        if self._get_many is None:
            return [None] * len(cmds)
        outcomes: list[Any] = [None] * len(cmds)
        keys, where = [], []
        for i, args in enumerate(cmds):
            try:
                keys.append(self._key(args[1]))
            except RingkvError as exc:
                outcomes[i] = exc
                continue
            where.append(i)
        if not keys:
            return outcomes
        nil = s.nil
        for i, values in zip(where, self._get_many(keys, s.read_level)):
            outcomes[i] = _single(values, nil) if values.__class__ is list else values
        return outcomes

    def set_many(self, s: Session, cmds: list[Command]) -> tuple[list[Any], Any]:
        """Plain ``SET key value`` commands (no options) of one pipelined group, applied
        together where the node can (``ops.kv_put_blind_many``) with one durability wait.

        Returns ``(outcomes, durable)``: per command ``True`` (reply OK once ``durable``
        is done, or now if it is None), an exception (its error reply) or ``False`` (run
        :meth:`set` for it)."""
        if self._put_blind_many is None:
            return [False] * len(cmds), None
        outcomes: list[Any] = [False] * len(cmds)
        items, where = [], []
        for i, args in enumerate(cmds):
            try:
                items.append((self._key(args[1]), self._value(args[2])))
            except RingkvError as exc:
                outcomes[i] = exc
                continue
            where.append(i)
        if not items:
            return outcomes, None
        done, durable = self._put_blind_many(items, s.write_level)
        for i, outcome in zip(where, done):
            outcomes[i] = outcome
        return outcomes, durable

    async def set(self, s: Session, args: Command) -> bytes:
        key, value = self._key(args[1]), self._value(args[2])
        ttl, cond, want_old = _set_options(args[3:])
        if cond is None and not want_old:
            await self.ops.kv_put(key, value, None, s.write_level, ttl)
            return resp.OK
        values, ctx = await self.ops.kv_get(key, s.read_level)
        if want_old and len(values) > 1:
            return _single(values)
        old = _single(values, s.nil) if want_old else None
        if (cond == b"NX" and values) or (cond == b"XX" and not values):
            return old if want_old else s.nil  # type: ignore[return-value]
        await self.ops.kv_put(key, value, ctx, s.write_level, ttl)
        return old if want_old else resp.OK  # type: ignore[return-value]

    async def _overwrite(self, s: Session, key: bytes, value: bytes) -> None:
        await self.ops.kv_put(key, value, None, s.write_level, None)

    async def _delete_one(self, s: Session, key: bytes) -> int:
        values, ctx = await self.ops.kv_get(key, s.read_level)
        if not values:
            return 0
        await self.ops.kv_delete(key, ctx, s.write_level)
        return 1

    async def delete(self, s: Session, args: Command) -> bytes:
        keys = list(dict.fromkeys(self._key(k) for k in args[1:]))
        counts = await _all([self._delete_one(s, k) for k in keys])
        return resp.integer(sum(counts))

    async def exists(self, s: Session, args: Command) -> bytes:
        keys = [self._key(k) for k in args[1:]]
        unique = list(dict.fromkeys(keys))
        found = await _all([self.ops.kv_get(k, s.read_level) for k in unique])
        present = {k for k, (values, _) in zip(unique, found) if values}
        return resp.integer(sum(1 for k in keys if k in present))

    async def mget(self, s: Session, args: Command) -> bytes:
        keys = [self._key(k) for k in args[1:]]
        unique = list(dict.fromkeys(keys))
        found = await asyncio.gather(*(self.ops.kv_get(k, s.read_level) for k in unique),
                                     return_exceptions=True)
        by_key = {k: (error_reply(r) if isinstance(r, BaseException) else _single(r[0], s.nil))
                  for k, r in zip(unique, found)}
        return resp.array([by_key[k] for k in keys])

    async def mset(self, s: Session, args: Command) -> bytes:
        if len(args) % 2 != 1:
            raise InvalidRequest("wrong number of arguments for 'mset' command")
        pairs = {self._key(k): self._value(v) for k, v in zip(args[1::2], args[2::2])}
        await _all([self._overwrite(s, k, v) for k, v in pairs.items()])
        return resp.OK

    async def getall(self, s: Session, args: Command) -> bytes:
        """RINGKV.GETALL key [R level] -> [context, value1, value2, ...]."""
        level = _level_option(args[2:], b"R") or s.read_level
        values, ctx = await self.ops.kv_get(self._key(args[1]), level)
        return resp.bulk_array([ctx, *values])

    async def put(self, s: Session, args: Command) -> bytes:
        """RINGKV.PUT key value context [EX s | PX ms] [W level] -> new context.
        An empty context is "no context": the put supersedes what the coordinator holds."""
        key, value, ctx = self._key(args[1]), self._value(args[2]), args[3] or None
        rest = list(args[4:])
        level = _level_option(rest, b"W") or s.write_level
        ttl, cond, want_old = _set_options([a for a in _strip_level(rest, b"W")])
        if cond or want_old:
            raise _syntax()
        return resp.bulk(await self.ops.kv_put(key, value, ctx, level, ttl))

    async def ringkv_del(self, s: Session, args: Command) -> bytes:
        """RINGKV.DEL key context [W level] -> OK."""
        level = _level_option(args[3:], b"W") or s.write_level
        await self.ops.kv_delete(self._key(args[1]), args[2] or None, level)
        return resp.OK


async def _all(coros: list[Awaitable[Any]]) -> list[Any]:
    if len(coros) == 1:
        return [await coros[0]]
    return list(await asyncio.gather(*coros))


def _single(values: list[bytes], nil: bytes = resp.NIL) -> bytes:
    if not values:
        return nil
    if len(values) == 1:
        return resp.bulk(values[0])
    return resp.error(f"SIBLINGS {len(values)} siblings for this key; use RINGKV.GETALL")


def _set_options(opts: list[bytes]) -> tuple[float | None, bytes | None, bool]:
    """Parse SET's options -> (ttl seconds, b"NX"/b"XX"/None, GET given)."""
    ttl: float | None = None
    cond: bytes | None = None
    want_old = False
    i = 0
    while i < len(opts):
        word = opts[i].upper()
        if word in (b"NX", b"XX") and cond is None:
            cond = word
        elif word == b"GET" and not want_old:
            want_old = True
        elif word in (b"EX", b"PX", b"EXAT", b"PXAT") and ttl is None and i + 1 < len(opts):
            ttl = _ttl(word, _int_arg(opts[i + 1]))
            i += 1
        elif word == b"KEEPTTL":
            raise InvalidRequest("KEEPTTL is not supported by ringkv")
        else:
            raise _syntax()
        i += 1
    return ttl, cond, want_old


def _ttl(unit: bytes, n: int) -> float:
    if unit == b"EX":
        seconds = float(n)
    elif unit == b"PX":
        seconds = n / 1000.0
    elif unit == b"EXAT":
        seconds = n - time.time()
    else:
        seconds = n / 1000.0 - time.time()
    if n <= 0 or seconds <= 0:
        raise InvalidRequest("invalid expire time in 'set' command")
    return seconds


def _level_option(opts: list[bytes], flag: bytes) -> str | None:
    for i, word in enumerate(opts):
        if word.upper() == flag and i + 1 < len(opts):
            return opts[i + 1].decode("ascii", "replace").upper()
    return None


def _strip_level(opts: list[bytes], flag: bytes) -> list[bytes]:
    out, skip = [], False
    for word in opts:
        if skip:
            skip = False
        elif word.upper() == flag:
            skip = True
        else:
            out.append(word)
    return out


_CONFIG = {"save": "", "appendonly": "no", "databases": "1", "maxmemory": "0",
           "maxclients": "10000", "timeout": "0"}


def _command_entry(spec: Spec) -> bytes:
    first = last = step = 0
    if spec.keys is not None:
        first, step = 1, (2 if spec.keys is _write_pairs else 1)
        last = -1 if spec.arity < 0 and spec.keys in (_read_all, _write_all, _write_pairs) else 1
    return resp.encode([spec.name, spec.arity, list(spec.flags), first, last, step, [], [], [], []])


def _info_sections(cmds: Commands, wanted: set[str]) -> list[str]:
    st = cmds.stats
    sections = {
        "server": [("redis_version", "7.0.0"), ("ringkv_version", "0.1.0"),
                   ("redis_mode", "standalone"), ("tcp_port", cmds.port),
                   ("uptime_in_seconds", int(time.time() - cmds.started))],
        "clients": [("connected_clients", st.get("connected_clients", 0)),
                    ("maxclients", st.get("max_connections", 0))],
        "stats": [(k, v) for k, v in st.items() if k.startswith(("total_", "rejected_", "errors_",
                                                                  "protocol_"))],
        "ringkv": sorted(_safe_info(cmds.info).items()),
        "keyspace": [],
    }
    if wanted and not wanted & {"all", "everything", "default"}:
        sections = {k: v for k, v in sections.items() if k in wanted}
    return [f"# {name.capitalize()}\r\n" + "".join(f"{k}:{v}\r\n" for k, v in rows)
            for name, rows in sections.items()]


def _safe_info(info: Callable[[], dict]) -> dict:
    """The node's stats as flat ``name:value`` INFO lines (nested dicts become a_b)."""
    try:
        return dict(_flatten("", info() or {}))
    except Exception as exc:  # a stats callback must never break INFO
        return {"info_error": type(exc).__name__}


def _flatten(prefix: str, data: Any) -> list[tuple[str, str]]:
    if isinstance(data, dict):
        out: list[tuple[str, str]] = []
        for k, v in data.items():
            out += _flatten(f"{prefix}_{k}" if prefix else str(k), v)
        return out
    if isinstance(data, (list, tuple)):
        data = ",".join(str(x) for x in data)
    name = prefix.replace(":", "_").replace(" ", "_").replace("\r", "").replace("\n", "")
    return [(name, str(data).replace("\r", " ").replace("\n", " "))]


__all__ = ["Commands", "KvOps", "Session", "Spec", "error_reply"]
