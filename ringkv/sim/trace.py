"""The event trace digest: same seed, same history, same digest.

Every delivered message (time, sender, receiver, method, encoded body), every fault the
nemesis injects and every client operation's outcome is fed, in order, into one BLAKE2b
hash. Two runs of one seed must print the same digest; any divergence in what happened,
or in what order, changes it.

A message is hashed as ``m``, its time as a binary double (exact, and cheaper to make
than text), small numbers standing for the sender, receiver and method, then the body.
Each name's number is hashed (``n|number|name|``) where it first appears, so the stream
still says which name is which. Bytes are buffered and hashed in chunks: BLAKE2b of a
stream does not depend on how it is cut into ``update`` calls.
"""

from __future__ import annotations

import hashlib
import struct

_CHUNK = 1 << 16  # bytes buffered before they are hashed
_HEAD = struct.Struct("<cdHHH").pack  # b"m", time, sender, receiver, method


class Trace:
    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)
        self._buf = bytearray()
        self._names: dict[str, int] = {}
        self.events = 0
        self.log: list[str] | None = None  # set to a list to keep a readable event log

    def _name(self, name: str) -> int:
        """The number standing for ``name`` in message heads (announced when new)."""
        n = self._names.get(name)
        if n is None:
            n = self._names[name] = len(self._names)
            self._buf += b"n|%d|%s|" % (n, name.encode())
        return n

    def message(self, t: float, src: str, dst: str, method: str, payload: bytes) -> None:
        names = self._names
        try:
            head = _HEAD(b"m", t, names[src], names[dst], names[method])
        except KeyError:
            head = _HEAD(b"m", t, self._name(src), self._name(dst), self._name(method))
        buf = self._buf
        buf += head
        buf += payload
        if len(buf) > _CHUNK:
            self._h.update(buf)
            buf.clear()
        self.events += 1
        if self.log is not None:
            self.log.append(f"m|{t:.9f}|{src}|{dst}|{method}|" + payload.hex()[:32])

    def event(self, t: float, *parts: object) -> None:
        line = f"e|{t:.9f}|" + "|".join(map(str, parts))
        self._buf += line.encode()
        self.events += 1
        if self.log is not None:
            self.log.append(line)

    def digest(self) -> str:
        self._h.update(self._buf)
        self._buf.clear()
        return self._h.hexdigest()


__all__ = ["Trace"]
