"""Wire framing for ringkv RPC, sans-IO (h11 style): bytes in -> messages out, messages in -> bytes out.

A frame is ``[u32 big-endian payload length][payload]`` where the payload is the msgpack
array ``[kind, request_id, method_or_code, body]``:

    kind 0 REQUEST   method_or_code = method name (str), body = dict of arguments
    kind 1 OK        method_or_code = "" (unused),        body = dict reply
    kind 2 ERROR     method_or_code = error code (str),   body = RingkvError.to_wire()

msgpack is packed with ``use_bin_type=True`` and unpacked with ``raw=False``, so bytes
stay bytes and str stays str on both sides. Nothing here touches sockets, the clock or a
loop; :mod:`ringkv.net.transport` feeds this module the bytes it reads and writes the
bytes it returns. A :class:`FrameDecoder` that raised once is dead: the connection
carrying it must be closed (its stream position is lost).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from ringkv.errors import ProtocolError, RingkvError, TooLarge

REQUEST, OK, ERROR = 0, 1, 2
HEADER = struct.Struct(">I")
HEADER_BYTES = HEADER.size
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024

Message = tuple[int, int, str, dict]  # (kind, request_id, method_or_code, body)


class FrameEncoder:
    """Turns messages into frame bytes. One per connection (msgpack.Packer is not thread-safe)."""

    __slots__ = ("_pack", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self.max_frame_bytes = max_frame_bytes

    def encode(self, kind: int, request_id: int, method_or_code: str, body: Any) -> bytes:
        """One frame. Raises TooLarge (nothing is sent) past max_frame_bytes, and
        ProtocolError if the body holds something msgpack cannot carry."""
        try:
            payload = self._pack([kind, request_id, method_or_code, body])
        except (TypeError, ValueError, OverflowError) as exc:
            raise ProtocolError(f"cannot encode {method_or_code!r} message: {exc}") from None
        if len(payload) > self.max_frame_bytes:
            raise TooLarge("frame", len(payload), self.max_frame_bytes)
        return HEADER.pack(len(payload)) + payload

    def request(self, request_id: int, method: str, body: dict) -> bytes:
        return self.encode(REQUEST, request_id, method, body)

    def ok(self, request_id: int, body: dict) -> bytes:
        return self.encode(OK, request_id, "", body)

    def error(self, request_id: int, err: RingkvError) -> bytes:
        return self.encode(ERROR, request_id, type(err).__name__, err.to_wire())


class FrameDecoder:
    """Accumulates received bytes and returns the complete messages in them.

    ``feed(data)`` returns a list of :data:`Message` tuples (possibly empty). It raises
    :class:`TooLarge` for a frame header announcing more than ``max_frame_bytes`` and
    :class:`ProtocolError` for a payload that is not a valid message; the raised error
    carries ``request_id`` (int, 0 when unknown) so the receiver can answer it.
    """

    __slots__ = ("_buf", "max_frame_bytes", "_failed")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self.max_frame_bytes = max_frame_bytes
        self._failed: RingkvError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        if self._failed is not None:
            raise self._failed
        buf = self._buf
        if buf:
            buf += data
            view, size = buf, len(buf)
        else:
            view, size = data, len(data)
        out: list[Message] = []
        pos = 0
        try:
            while size - pos >= HEADER_BYTES:
                (length,) = HEADER.unpack_from(view, pos)
                if length > self.max_frame_bytes:
                    raise _tag(TooLarge("frame", length, self.max_frame_bytes), 0)
                end = pos + HEADER_BYTES + length
                if end > size:
                    break
                out.append(_parse(view[pos + HEADER_BYTES:end]))
                pos = end
        except RingkvError as exc:
            self._failed = exc
            self._buf = bytearray()
            raise
        if buf:
            del buf[:pos]
        elif pos < size:
            self._buf = bytearray(data[pos:])
        return out


def _parse(payload: bytes | bytearray) -> Message:
    """Unpack and check one payload; raise ProtocolError (tagged with the request id if known)."""
    try:
        msg = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise _tag(ProtocolError(f"malformed msgpack payload: {type(exc).__name__}"), 0) from None
    if type(msg) is not list or len(msg) != 4:
        raise _tag(ProtocolError("message is not a 4-element array"), 0)
    kind, rid, name, body = msg
    if type(rid) is not int or not 0 <= rid < 2**64:
        raise _tag(ProtocolError("request id is not an unsigned integer"), 0)
    if kind not in (REQUEST, OK, ERROR) or type(kind) is not int:
        raise _tag(ProtocolError(f"unknown message kind {kind!r}"), rid)
    if type(name) is not str or type(body) is not dict:
        raise _tag(ProtocolError("method must be a str and body a map"), rid)
    return kind, rid, name, body


def _tag(err: RingkvError, request_id: int) -> RingkvError:
    err.request_id = request_id  # type: ignore[attr-defined]
    return err


__all__ = ["REQUEST", "OK", "ERROR", "HEADER", "Message", "FrameEncoder", "FrameDecoder",
           "DEFAULT_MAX_FRAME_BYTES"]
