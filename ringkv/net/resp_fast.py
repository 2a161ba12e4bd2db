"""The RESP request parser the server uses: hiredis's C reader in front of the exact Python parser.

:class:`FastRespParser` has :class:`~ringkv.net.resp.RespParser`'s interface and answers
(``feed(data) -> list[Command]``, ``error``, ``buffered``), but parses well-formed
multibulk requests with ``hiredis.Reader`` (C, about 10x faster). hiredis is a *reply*
parser: it accepts nested arrays and types a request may not hold, preallocates a list
for a ``*<n>`` header, knows no inline commands and no limits. So it only sees bytes a
cheap screen has passed, and everything else goes to the exact Python parser
(:class:`~ringkv.net.resp.RespParser`), which decides -- commands, limits, errors -- as
it always did.

How the two are joined (invariants):
- *Known boundary*: the parser knows it is between two commands when every command
  started since the last known boundary has completed, hiredis holds no unread byte and
  the last byte was ``\n`` (hiredis consumes the type byte of a top-level reply before
  the rest arrives: ``$`` alone is a started reply that nothing else shows).
  "Started" is counted conservatively from the bytes (``*`` at the boundary, then every
  ``\\n`` followed by an aggregate type byte: a real header always follows a ``\\n``; a
  payload may add false ones, which only make the parser think it is mid-command).
  Chunks fed since the known boundary are kept (``_chunks``), so the Python parser can
  re-read them.
- *Screen* (before hiredis sees a chunk): an array count of 3+ digits (or of as many
  digits as ``max_array_len``), a bulk length of as many digits as ``max_bulk_bytes``,
  a ``\\n`` followed by a RESP3 aggregate or a non-bulk string type (``% ~ > | + =``),
  or more than ``max_command_bytes`` (at most 1 MiB) since the known boundary: the chunk is not given to
  hiredis. A chunk at a known boundary that does not start with ``*`` (inline command)
  is not either.
- *After* hiredis: a reply that is not a flat list of bytes, a hiredis protocol error, or
  more commands started than completed + 1 (a nested array): not trusted either.
- Not trusted means *replay*: the Python parser is fed every chunk since the known
  boundary; its first ``_returned`` commands are the ones hiredis already returned (same
  bytes) and are dropped. The Python parser then carries the connection until it is at a
  boundary with nothing buffered, and hiredis takes over again.
- Memory: hiredis allocates a list of at most 99 slots per array header before the
  counting check runs, so one chunk can cost at most ~170x its size, once: the check
  after that chunk drops the reader.

One difference with the Python parser, shared with Redis itself: the two bytes after a
bulk string are skipped, not checked to be CRLF (Redis's processMultibulkBuffer does the
same), when hiredis parsed the command.
"""

from __future__ import annotations

import re

import hiredis

from ringkv.errors import ProtocolError
from ringkv.net.resp import Command, RespLimits, RespParser

# Headers that start a nested value are "\n" + one of "*%~>|". Only "\n*" needs counting:
# a chunk holding any of the other four never reaches the count (the screen sends it to
# the Python parser first), and each count is one more pass over the chunk.
_NESTED = b"\n*"
_STAR = 42
_MAX_SINCE = 1 << 20


class FastRespParser:
    """Incremental RESP request parser for one connection (see the module comment).

    Same contract as :class:`~ringkv.net.resp.RespParser`: ``feed`` returns the commands
    completed so far, in order; after a protocol error :attr:`error` is set and ``feed``
    returns nothing more."""

    __slots__ = ("limits", "error", "_reader", "_py", "_chunks", "_chunk_bytes", "_started",
                 "_completed", "_returned", "_last_nl", "_tail", "_screen", "_max_since")

    def __init__(self, limits: RespLimits = RespLimits()) -> None:
        self.limits = limits
        self.error: ProtocolError | None = None
        self._py: RespParser | None = None  # set while the Python parser carries the stream
        self._screen = _screen_for(limits)
        # past this many bytes without a known boundary (a large value, or a client streaming
        # commands across reads), the Python parser takes over: it re-reads at most this
        self._max_since = min(limits.max_command_bytes, _MAX_SINCE)
        self._reset_fast()

    def _reset_fast(self) -> None:
        self._reader = hiredis.Reader()
        self._chunks: list[bytes] = []  # fed to hiredis since the known boundary
        self._chunk_bytes = 0
        self._started = 0  # commands started since the known boundary (an upper bound)
        self._completed = 0  # replies hiredis returned since the known boundary
        self._returned = 0  # of those, commands returned to the caller
        self._last_nl = False  # the last chunk fed ended with b"\n"
        self._tail = b""  # the last 16 bytes fed since the known boundary (headers split over reads)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet part of a returned command (an upper bound while
        hiredis is mid-command)."""
        if self._py is not None:
            return self._py.buffered
        return self._chunk_bytes

    def feed(self, data: bytes) -> list[Command]:
        if self.error is not None or not data:
            return []
        if self._py is not None:
            return self._feed_py(data)
        if not self._chunks:  # known boundary
            if data[0] != _STAR:
                return self._to_py(data)  # inline command (or not RESP): the exact parser
            started = 1
        elif self._last_nl and data[:1] in (b"*", b"%", b"~", b">", b"|"):
            started = 1
        else:
            started = 0
        if self._chunk_bytes + len(data) > self._max_since or self._screen(data) is not None or (
                self._chunks and self._screen(self._tail + data[:16]) is not None):
            return self._to_py(data)
        self._tail = data[-16:] if len(data) >= 16 else (self._tail + data)[-16:]
        started += data.count(_NESTED)  # the screen passed it: no "\n%~>|" in it
        self._started += started
        self._chunks.append(data)
        self._chunk_bytes += len(data)
        self._last_nl = data[-1] == 10
        reader = self._reader
        reader.feed(data)
        out: list[Command] = []
        gets = reader.gets
        try:
            while True:
                cmd = gets()
                if cmd is False:
                    break
                self._completed += 1
                if cmd.__class__ is not list:  # None is "*-1" but also "$-1", "_": ambiguous
                    return self._replay(out)
                if not cmd:  # "*0"
                    continue
                for arg in cmd:
                    if arg.__class__ is not bytes:
                        return self._replay(out)
                out.append(cmd)
        except hiredis.ProtocolError:
            return self._replay(out)
        if self._started > self._completed + 1:  # a nested array (or a payload that looks like one)
            return self._replay(out)
        self._returned += len(out)
        if self._started == self._completed and self._last_nl and not reader.has_data():
            self._chunks, self._chunk_bytes = [], 0  # known boundary again
            self._started = self._completed = self._returned = 0
        return out

    def _replay(self, _partial: list[Command]) -> list[Command]:
        """hiredis cannot be trusted with what came since the known boundary: let the
        Python parser re-read it. The commands hiredis returned in this call (``_partial``)
        are produced again by the replay."""
        chunks, skip = self._chunks, self._returned
        self._py = RespParser(self.limits)
        out = self._py.feed(b"".join(chunks)) if chunks else []
        self._reset_fast()
        return self._after_py(out[skip:])

    def _to_py(self, data: bytes) -> list[Command]:
        self._chunks.append(data)
        return self._replay([])

    def _feed_py(self, data: bytes) -> list[Command]:
        return self._after_py(self._py.feed(data))  # type: ignore[union-attr]

    def _after_py(self, out: list[Command]) -> list[Command]:
        py = self._py
        assert py is not None
        if py.error is not None:
            self.error = py.error
        elif py.at_boundary:
            self._py = None  # hiredis again (the reader was reset when py took over)
        return out


def _screen_for(limits: RespLimits):  # -> Callable[[bytes], re.Match | None]
    """The search that finds anything hiredis must not see (module comment, *Screen*)."""
    star = min(len(str(limits.max_array_len)), 3)
    dollar = len(str(limits.max_bulk_bytes))
    return re.compile(rb"\n[%%~>|+=]|\*\d{%d}|\$\d{%d}" % (star, dollar)).search


__all__ = ["FastRespParser"]
