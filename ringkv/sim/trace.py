"""The event trace digest: same seed, same history, same digest.

Every delivered message (time, sender, receiver, method, encoded body), every fault the
nemesis injects and every client operation's outcome is fed, in order, into one BLAKE2b
hash. Two runs of one seed must print the same digest; any divergence in what happened,
or in what order, changes it.
"""

from __future__ import annotations

import hashlib


class Trace:
    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)
        self.events = 0
        self.log: list[str] | None = None  # set to a list to keep a readable event log

    def message(self, t: float, src: str, dst: str, method: str, payload: bytes) -> None:
        head = f"m|{t:.9f}|{src}|{dst}|{method}|"
        self._h.update(head.encode() + payload)  # one update: the same bytes, the same digest
        self.events += 1
        if self.log is not None:
            self.log.append(head + payload.hex()[:32])

    def event(self, t: float, *parts: object) -> None:
        line = f"e|{t:.9f}|" + "|".join(map(str, parts))
        self._h.update(line.encode())
        self.events += 1
        if self.log is not None:
            self.log.append(line)

    def digest(self) -> str:
        return self._h.hexdigest()


__all__ = ["Trace"]
