"""YCSB's key choosers and workload mixes, pure (a seeded ``random.Random`` in, numbers out).

The generators follow YCSB's ``core`` package (Cooper et al., SoCC 2010):

- :class:`Uniform`: every existing record equally likely.
- :class:`ScrambledZipfian`: Zipf with constant 0.99 (Gray et al., "Quickly generating
  billion-record synthetic databases", SIGMOD 1994), then hashed so the popular records
  are spread over the keyspace instead of being the first ones.
- :class:`Latest`: Zipf over recency, so the newest inserted records are the hottest.

Each ``next(count)`` returns a record number in ``[0, count)``; ``count`` may grow as a
workload inserts (YCSB extends zeta incrementally, and so does this module).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ZIPF_CONSTANT = 0.99
_FNV_OFFSET, _FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3


def fnv64(n: int) -> int:
    """FNV-1a over the 8 little-endian bytes of n (YCSB's Utils.fnvhash64)."""
    h = _FNV_OFFSET
    for _ in range(8):
        h ^= n & 0xFF
        h = (h * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
        n >>= 8
    return h


class Uniform:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def next(self, count: int) -> int:
        return self.rng.randrange(count)


class Zipfian:
    """Zipf-distributed numbers in [0, count): 0 is the most popular."""

    def __init__(self, rng: random.Random, count: int, theta: float = ZIPF_CONSTANT) -> None:
        self.rng, self.theta = rng, theta
        self.alpha = 1.0 / (1.0 - theta)
        self.zeta2 = 1.0 + 0.5 ** theta
        self.count, self.zetan = 0, 0.0
        self._extend(max(count, 1))

    def _extend(self, count: int) -> None:
        theta, z = self.theta, self.zetan
        for i in range(self.count + 1, count + 1):
            z += 1.0 / i ** theta
        self.count, self.zetan = count, z
        self.eta = (1 - (2.0 / count) ** (1 - theta)) / (1 - self.zeta2 / z) if count > 1 else 1.0

    def next(self, count: int) -> int:
        if count > self.count:
            self._extend(count)
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < self.zeta2:
            return 1 if count > 1 else 0
        return min(count - 1, int(count * (self.eta * u - self.eta + 1) ** self.alpha))


class ScrambledZipfian:
    """Zipfian popularity, scattered over the keyspace by a hash (YCSB's default chooser)."""

    def __init__(self, rng: random.Random, count: int) -> None:
        self.zipf = Zipfian(rng, count)

    def next(self, count: int) -> int:
        return fnv64(self.zipf.next(count)) % count


class Latest:
    """The most recently inserted records are the most popular (YCSB's SkewedLatest)."""

    def __init__(self, rng: random.Random, count: int) -> None:
        self.zipf = Zipfian(rng, count)

    def next(self, count: int) -> int:
        return count - 1 - self.zipf.next(count)


def chooser(name: str, rng: random.Random, count: int) -> Uniform | ScrambledZipfian | Latest:
    if name == "uniform":
        return Uniform(rng)
    if name == "zipfian":
        return ScrambledZipfian(rng, count)
    if name == "latest":
        return Latest(rng, count)
    raise ValueError(f"unknown distribution {name!r} (uniform, zipfian, latest)")


@dataclass(frozen=True)
class Workload:
    """One YCSB core workload: operation proportions and the default key chooser."""

    name: str
    read: float = 0.0
    update: float = 0.0
    insert: float = 0.0
    scan: float = 0.0
    rmw: float = 0.0
    distribution: str = "zipfian"
    summary: str = ""

    def pick(self, u: float) -> str:
        """The operation for a uniform draw ``u`` in [0, 1)."""
        for op in ("read", "update", "insert", "scan", "rmw"):
            share = getattr(self, op)
            if u < share:
                return op
            u -= share
        return "read"


WORKLOADS = {
    "A": Workload("A", read=0.5, update=0.5, summary="update heavy: 50% reads, 50% updates"),
    "B": Workload("B", read=0.95, update=0.05, summary="read mostly: 95% reads, 5% updates"),
    "C": Workload("C", read=1.0, summary="read only"),
    "D": Workload("D", read=0.95, insert=0.05, distribution="latest",
                  summary="read latest: 95% reads of recent records, 5% inserts"),
    "E": Workload("E", scan=0.95, insert=0.05,
                  summary="short ranges: 95% scans (EMULATED as multi-gets), 5% inserts"),
    "F": Workload("F", read=0.5, rmw=0.5,
                  summary="read-modify-write: 50% reads, 50% get+put with the context"),
}

MAX_SCAN_LENGTH = 100  # YCSB workload E: scan lengths uniform in [1, 100]


def record_key(n: int) -> bytes:
    """YCSB-style key of record ``n``."""
    return b"user%019d" % fnv64(n)


__all__ = ["Uniform", "Zipfian", "ScrambledZipfian", "Latest", "chooser", "Workload", "WORKLOADS",
           "record_key", "fnv64", "MAX_SCAN_LENGTH"]
