"""The Redis protocol (RESP2), sans-IO (h11 style): bytes in -> commands out, values in -> bytes out.

A client sends each command as an array of bulk strings (``*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n``)
or, as telnet and some tools do, as one *inline* line of words (``PING\\r\\n``). Many commands
may arrive in one read (pipelining) and one command may be split over many reads;
:class:`RespParser` takes care of both: ``feed(data)`` returns every complete command in
the bytes received so far, each a ``list[bytes]``, in order, and keeps the rest.

Limits (:class:`RespLimits`) bound what one connection can make the server hold: the
length of one bulk string, the number of elements of one command, the length of an
inline line, and the bytes of one whole command. Input past a limit, or input that is
not RESP, is a *protocol error*: ``feed`` returns the commands completed before the bad
bytes and sets :attr:`RespParser.error` to a :class:`~ringkv.errors.ProtocolError`. The
stream position is then lost, so the parser is dead (later ``feed`` calls return nothing)
and the connection must be closed after replying with ``-ERR Protocol error: ...``, which
is what Redis does too.

The encoder side is a handful of functions returning ``bytes`` (:func:`simple`,
:func:`error`, :func:`integer`, :func:`bulk`, :func:`array`, :func:`bulk_array`) plus
:func:`encode` for nested Python values. Nothing here touches sockets, time or a loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringkv.config import LimitsConfig
from ringkv.errors import ProtocolError

Command = list[bytes]

_STAR, _DOLLAR = 42, 36  # b"*", b"$"
_CRLF = b"\r\n"
_MAX_HEADER = 32  # longest "*<n>\r\n" / "$<n>\r\n" header line we wait for


@dataclass(frozen=True)
class RespLimits:
    """Bounds on one connection's input. Defaults follow Redis where it has one."""

    max_bulk_bytes: int = 16 * 1024 * 1024  # one bulk string (Redis: proto-max-bulk-len, 512 MiB)
    max_array_len: int = 1024 * 1024  # elements in one command array (Redis: 1024*1024)
    max_inline_bytes: int = 64 * 1024  # one inline command line (Redis: PROTO_INLINE_MAX_SIZE)
    max_command_bytes: int = 16 * 1024 * 1024  # one whole command, counting 16 bytes of overhead per element

    @classmethod
    def from_config(cls, limits: LimitsConfig) -> "RespLimits":
        """Protocol limits for a node: a command may be as large as one wire frame.

        Key and value limits are *not* protocol limits: the server answers a key or
        value over ``max_key_bytes``/``max_value_bytes`` with ``-TOOLARGE`` and keeps the
        connection, while bytes past these limits close it."""
        return cls(max_bulk_bytes=limits.max_frame_bytes,
                   max_command_bytes=limits.max_frame_bytes)


class RespParser:
    """Incremental RESP2 request parser for one connection. Not thread-safe.

    ``feed(data) -> list[Command]``: every command completed by ``data``, in order.
    A command is a non-empty list of bytes (the command name is ``cmd[0]``, as sent).
    Empty arrays (``*0``, ``*-1``) and blank inline lines are skipped, as Redis does.
    After a protocol error, :attr:`error` is set and the parser returns nothing more.
    """

    __slots__ = ("limits", "error", "_buf", "_args", "_remaining", "_bulk_len", "_cmd_bytes")

    def __init__(self, limits: RespLimits = RespLimits()) -> None:
        self.limits = limits
        self.error: ProtocolError | None = None
        self._buf = bytearray()
        self._args: Command = []
        self._remaining = 0  # elements of the current array still to read; 0 = between commands
        self._bulk_len = -1  # length of the bulk being read; -1 = its header is not read yet
        self._cmd_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet part of a returned command."""
        return len(self._buf)

    @property
    def at_boundary(self) -> bool:
        """True between two commands with nothing buffered (and no error)."""
        return not self._buf and not self._remaining and self.error is None

    def feed(self, data: bytes) -> list[Command]:
        if self.error is not None:
            return []
        buf = self._buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data  # common case: parse the bytes just read, no copy into the buffer
        out: list[Command] = []
        try:
            pos = self._parse(view, out)
        except ProtocolError as exc:
            self.error = exc
            self._buf = bytearray()
            self._args = []
            return out
        if buf:
            del buf[:pos]
        elif pos < len(data):
            self._buf = bytearray(data[pos:])
        return out

    def _parse(self, buf: bytes | bytearray, out: list[Command]) -> int:
        """Parse as many commands as ``buf`` holds; return the bytes consumed."""
        pos, n = 0, len(buf)
        while pos < n or self._remaining:
            if self._remaining == 0:
                if buf[pos] == _STAR:
                    new_pos = self._array_header(buf, pos, n)
                else:
                    new_pos = self._inline(buf, pos, n, out)
                if new_pos < 0:
                    return pos
                pos = new_pos
                continue
            pos = self._bulks(buf, pos, n)
            if self._remaining:
                return pos
            out.append(self._args)
            self._args = []
        return pos

    def _array_header(self, buf: bytes | bytearray, pos: int, n: int) -> int:
        eol = buf.find(_CRLF, pos, pos + _MAX_HEADER)
        if eol < 0:
            if n - pos >= _MAX_HEADER:
                raise ProtocolError("invalid multibulk length")
            return -1
        count = _int(buf[pos + 1:eol], "invalid multibulk length")
        if count > self.limits.max_array_len:
            raise ProtocolError(f"multibulk length {count} over the limit of "
                                f"{self.limits.max_array_len}")
        if count > 0:
            self._remaining, self._args, self._cmd_bytes = count, [], 0
        return eol + 2

    def _inline(self, buf: bytes | bytearray, pos: int, n: int, out: list[Command]) -> int:
        limit = self.limits.max_inline_bytes
        eol = buf.find(b"\n", pos, pos + limit + 2)
        if eol < 0:
            if n - pos > limit:
                raise ProtocolError(f"inline command over the limit of {limit} bytes")
            return -1
        line = bytes(buf[pos:eol])
        if len(line.rstrip(b"\r")) > limit:
            raise ProtocolError(f"inline command over the limit of {limit} bytes")
        args = split_inline(line)
        if args:
            out.append(args)
        return eol + 1

    def _bulks(self, buf: bytes | bytearray, pos: int, n: int) -> int:
        """Read bulks of the current array; return the position reached (``_remaining``
        stays > 0 when the bytes ran out first). The hot loop: locals only."""
        args, limits, find = self._args, self.limits, buf.find
        remaining, blen, cmd_bytes = self._remaining, self._bulk_len, self._cmd_bytes
        try:
            while remaining:
                if blen < 0:
                    if pos >= n:
                        return pos
                    if buf[pos] != _DOLLAR:
                        raise ProtocolError(f"expected '$', got {chr(buf[pos])!r}")
                    eol = find(_CRLF, pos, pos + _MAX_HEADER)
                    if eol < 0:
                        if n - pos >= _MAX_HEADER:
                            raise ProtocolError("invalid bulk length")
                        return pos
                    if eol == pos + 1 or not 48 <= buf[pos + 1] <= 57 or eol - pos > 19:
                        raise ProtocolError("invalid bulk length")
                    try:
                        blen = int(buf[pos + 1:eol])
                    except ValueError:
                        raise ProtocolError("invalid bulk length") from None
                    if blen > limits.max_bulk_bytes:
                        raise ProtocolError(f"bulk length {blen} over the limit of "
                                            f"{limits.max_bulk_bytes} bytes")
                    cmd_bytes += blen + 16
                    if cmd_bytes > limits.max_command_bytes:
                        raise ProtocolError(f"command over the limit of "
                                            f"{limits.max_command_bytes} bytes")
                    pos = eol + 2
                end = pos + blen
                if end + 2 > n:
                    return pos
                if buf[end] != 13 or buf[end + 1] != 10:
                    raise ProtocolError("bulk string not terminated by CRLF")
                args.append(bytes(buf[pos:end]))
                pos = end + 2
                blen = -1
                remaining -= 1
            return pos
        finally:
            self._remaining, self._bulk_len, self._cmd_bytes = remaining, blen, cmd_bytes


def _int(raw: bytes | bytearray, message: str) -> int:
    """Strict decimal integer (optional leading '-'), as Redis's string2ll."""
    digits = raw[1:] if raw[:1] == b"-" else raw
    if not digits or not digits.isdigit() or len(digits) > 18:
        raise ProtocolError(message)
    return int(raw)


def split_inline(line: bytes) -> Command:
    """Split an inline command line into arguments.

    Words are separated by spaces or tabs; a word may be quoted with "..." (with the
    escapes \\n \\r \\t \\b \\a \\\\ \\" and \\xHH) or '...' (only \\' escaped), as
    redis-cli and Redis's sdssplitargs do. Unbalanced quotes are a protocol error."""
    line = line.rstrip(b"\r")
    if b'"' not in line and b"'" not in line:
        return line.split()
    args: Command = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \t":
            i += 1
        if i >= n:
            return args
        word, i = _word(line, i, n)
        args.append(word)


def _word(line: bytes, i: int, n: int) -> tuple[bytes, int]:
    quote = line[i] if line[i] in b"\"'" else 0
    if quote:
        i += 1
    word = bytearray()
    while True:
        if i >= n:
            if quote:
                raise ProtocolError("unbalanced quotes in request")
            return bytes(word), i
        c = line[i]
        if quote and c == quote:
            if i + 1 < n and line[i + 1] not in b" \t":
                raise ProtocolError("unbalanced quotes in request")
            return bytes(word), i + 1
        if not quote and c in b" \t":
            return bytes(word), i
        if c == 92 and i + 1 < n and (quote == 34 or line[i + 1] == quote):  # backslash
            ch, i = _escape(line, i, quote)
            word.append(ch)
            continue
        word.append(c)
        i += 1


_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}


def _escape(line: bytes, i: int, quote: int) -> tuple[int, int]:
    nxt = line[i + 1]
    if quote == 34 and nxt == ord("x") and i + 3 < len(line):
        try:
            return int(line[i + 2:i + 4], 16), i + 4
        except ValueError:
            pass
    if quote == 34:
        return _ESCAPES.get(nxt, nxt), i + 2
    return nxt, i + 2


# ---------------------------------------------------------------------------- encoder

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NIL = b"$-1\r\n"
NIL_ARRAY = b"*-1\r\n"
NULL3 = b"_\r\n"  # RESP3's one null (a client that said HELLO 3 gets it for nil bulk and nil array)
EMPTY_ARRAY = b"*0\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"


class RespError:
    """An error value inside an array reply (RESP2 allows it, as in EXEC replies)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"RespError({self.message!r})"


def _line(text: str) -> bytes:
    """A simple-string/error payload: CR and LF would end the line early, so they become spaces."""
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")


def simple(text: str) -> bytes:
    return b"+" + _line(text) + _CRLF


def error(message: str) -> bytes:
    """``-<message>``; by convention the first word is the code (ERR, UNAVAILABLE, ...)."""
    return b"-" + _line(message) + _CRLF


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def bulk(value: bytes | None) -> bytes:
    if value is None:
        return NIL
    return b"$%d\r\n%b\r\n" % (len(value), value)


def bulk_array(values: list[bytes | None]) -> bytes:
    """An array of bulk strings (``None`` elements are nil)."""
    parts = [b"*%d\r\n" % len(values)]
    for v in values:
        parts.append(NIL if v is None else b"$%d\r\n%b\r\n" % (len(v), v))
    return b"".join(parts)


def array(encoded: list[bytes] | None) -> bytes:
    """An array of already encoded elements; ``None`` is the nil array."""
    if encoded is None:
        return NIL_ARRAY
    return b"*%d\r\n" % len(encoded) + b"".join(encoded)


def encode(value: object) -> bytes:
    """Encode a nested Python value: bytes/str -> bulk, int -> integer, None -> nil,
    list/tuple -> array, dict -> flat array of key/value pairs, RespError -> error."""
    if value is None:
        return NIL
    if isinstance(value, bool):
        return integer(int(value))
    if isinstance(value, int):
        return integer(value)
    if isinstance(value, (bytes, bytearray)):
        return bulk(bytes(value))
    if isinstance(value, str):
        return bulk(value.encode())
    if isinstance(value, RespError):
        return error(value.message)
    if isinstance(value, dict):
        return array([encode(x) for kv in value.items() for x in kv])
    if isinstance(value, (list, tuple)):
        return array([encode(x) for x in value])
    if isinstance(value, float):
        return bulk(repr(value).encode())
    raise TypeError(f"cannot encode {type(value).__name__} as RESP")


def encode_map(pairs: dict, proto: int = 2) -> bytes:
    """A map: RESP3 ``%`` type for a client that said ``HELLO 3``, else a flat array."""
    if proto != 3:
        return encode(pairs)
    return b"%%%d\r\n" % len(pairs) + b"".join(encode(k) + encode(v) for k, v in pairs.items())


def encode_command(*args: bytes | str | int) -> bytes:
    """A command as a client sends it (for tests and tools)."""
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return bulk_array(parts)  # type: ignore[arg-type]


__all__ = ["Command", "RespLimits", "RespParser", "RespError", "split_inline", "simple", "error",
           "integer", "bulk", "bulk_array", "array", "encode", "encode_map", "encode_command", "NULL3", "OK", "PONG",
           "NIL", "NIL_ARRAY", "EMPTY_ARRAY", "ZERO", "ONE"]
