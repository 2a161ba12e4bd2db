"""Bloom filter per SSTable: "definitely absent" or "maybe present" for a key.

One xxh3_64 hash per key, split into two 32-bit halves for double hashing
(Kirsch-Mitzenmacher: probe i is ``(h1 + i*h2) mod m``), so a read hashes the key once
and reuses that hash for every SSTable's filter. Sized for the configured false-positive
rate: m = -n ln p / (ln 2)^2 bits, k = round(m/n ln 2) probes.
Encoding: ``[m u64][k u8][bit array, ceil(m/8) bytes]``, bit p at byte p>>3, bit p&7.

The probe loops declare C integer types for Cython (``cython.locals``; D21): compiled,
they run in C; as plain Python the declarations do nothing. The results are the same
either way: h1 < 2**32, h2 <= 2**32 and k <= 30, so ``h1 + k*h2`` stays far below 2**64.
"""

from __future__ import annotations

import math
import struct

import cython
from xxhash import xxh3_64_intdigest

key_hash = xxh3_64_intdigest  # the one hash a read computes per key
_HEAD = struct.Struct("<QB")
_M32 = 0xFFFFFFFF


class BloomFilter:
    """A bit array of ``m`` bits probed ``k`` times per key."""

    __slots__ = ("bits", "m", "k", "_probes")

    def __init__(self, bits: bytes | bytearray, m: int, k: int) -> None:
        self.bits, self.m, self.k = bits, m, k
        self._probes = range(k)

    @classmethod
    def for_capacity(cls, n: int, fp_rate: float) -> "BloomFilter":
        """An empty filter sized for ``n`` keys at ``fp_rate``."""
        n = max(n, 1)
        m = max(64, int(math.ceil(-n * math.log(fp_rate) / (math.log(2) ** 2))))
        k = max(1, min(30, int(round(m / n * math.log(2)))))
        return cls(bytearray((m + 7) // 8), m, k)

    def add(self, h: int) -> None:
        """Add a key given its :func:`key_hash`."""
        bits, m = self.bits, self.m
        h1, h2 = h & _M32, (h >> 32) | 1
        for _ in self._probes:
            p = h1 % m
            bits[p >> 3] |= 1 << (p & 7)  # type: ignore[index]
            h1 += h2

    @cython.locals(hh=cython.ulonglong, h1=cython.ulonglong, h2=cython.ulonglong,
                   m=cython.ulonglong, p=cython.ulonglong, i=cython.int, k=cython.int)
    def add_keys(self, keys: list[bytes]) -> None:
        """Add many keys (hashing them); the flush hot loop, kept flat on purpose."""
        bits, m, k = self.bits, self.m, self.k
        for key in keys:
            hh = key_hash(key)
            h1, h2 = hh & 0xFFFFFFFF, (hh >> 32) | 1
            for i in range(k):
                p = h1 % m
                bits[p >> 3] |= 1 << (p & 7)  # type: ignore[index]
                h1 += h2

    @cython.locals(hh=cython.ulonglong, h1=cython.ulonglong, h2=cython.ulonglong,
                   m=cython.ulonglong, p=cython.ulonglong, i=cython.int, k=cython.int,
                   b=cython.p_uchar)
    def may_contain(self, h: int) -> bool:
        """False means the key is certainly not in the table."""
        b = self.bits  # bytes or bytearray, read in place
        m, k, hh = self.m, self.k, h
        h1, h2 = hh & 0xFFFFFFFF, (hh >> 32) | 1
        for i in range(k):
            p = h1 % m
            if not (b[p >> 3] >> (p & 7)) & 1:
                return False
            h1 += h2
        return True

    def encode(self) -> bytes:
        return _HEAD.pack(self.m, self.k) + bytes(self.bits)

    @classmethod
    def decode(cls, data: bytes) -> "BloomFilter":
        m, k = _HEAD.unpack_from(data, 0)
        bits = bytes(data[_HEAD.size:])
        if len(bits) != (m + 7) // 8 or k < 1:
            raise ValueError("bloom filter size mismatch")
        return cls(bits, m, k)
