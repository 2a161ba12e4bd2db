"""Bloom filter: no false negatives; measured false-positive rate near the configured one."""

from __future__ import annotations

import random

import pytest

from ringkv.storage.bloom import BloomFilter, key_hash


@pytest.mark.parametrize("fp_rate", [0.01, 0.05])
def test_measured_false_positive_rate(fp_rate):
    rnd = random.Random(7)
    present = [rnd.randbytes(16) for _ in range(20000)]
    f = BloomFilter.for_capacity(len(present), fp_rate)
    for k in present:
        f.add(key_hash(k))
    assert all(f.may_contain(key_hash(k)) for k in present)
    absent = [rnd.randbytes(17) for _ in range(50000)]
    measured = sum(f.may_contain(key_hash(k)) for k in absent) / len(absent)
    assert fp_rate * 0.5 < measured < fp_rate * 1.5


def test_encode_decode():
    f = BloomFilter.for_capacity(100, 0.01)
    for i in range(100):
        f.add(key_hash(b"%d" % i))
    g = BloomFilter.decode(f.encode())
    assert (g.m, g.k) == (f.m, f.k)
    assert all(g.may_contain(key_hash(b"%d" % i)) for i in range(100))
    with pytest.raises(ValueError):
        BloomFilter.decode(f.encode()[:-1])
