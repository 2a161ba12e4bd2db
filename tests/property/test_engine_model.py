"""Hypothesis state machines: the engine against a dict model, through puts, deletes,
TTLs, flushes, compactions, restarts (close + reopen), clock jumps past gc_grace and
scans; and a merge-mode variant (set-union merge, with base puts that replace) against a
dict-of-sets model."""

from __future__ import annotations

import shutil
import tempfile
from typing import Optional

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from ringkv.config import StorageConfig
from ringkv.storage import Engine
from ringkv.storage.compaction import pick_size_tiered
from ringkv.testing.fake_clock import FakeClock

# Deterministic on purpose: no automatic flushes or compactions (their timing would make
# the table layout differ between runs, which hypothesis cannot replay); the rules below
# flush and compact explicitly, including size-tiered picks and partial runs.
CFG = StorageConfig(sync_mode="off", memtable_bytes=1 << 30, block_bytes=256, compaction="none",
                    gc_grace_seconds=10.0, block_cache_bytes=64 * 1024)
KEYS = st.sampled_from([b"", b"a", b"ab", b"c\x00", b"k1", b"\xff"])
VALUES = st.binary(max_size=40)
SETTINGS = settings(max_examples=100, stateful_step_count=50, deadline=None,
                    suppress_health_check=list(HealthCheck))


def union(older: bytes, newer: bytes) -> bytes:
    return b",".join(sorted(set(older.split(b",")) | set(newer.split(b",")) - {b""}))


class EngineMachine(RuleBasedStateMachine):
    """Shared plumbing: a temp dir, a fake clock, open/close/flush/compact rules."""

    merge = None

    @initialize()
    def start(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="rkv-model-")
        self.clock = FakeClock()
        self.engine = self.open()

    def open(self) -> Engine:
        return Engine.open(self.dir, CFG, merge=self.merge, clock=self.clock)

    def teardown(self) -> None:
        if hasattr(self, "engine"):
            self.engine.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule()
    def flush(self) -> None:
        self.engine.flush()

    @rule()
    def compact(self) -> None:
        self.engine.compact()

    @rule()
    def size_tiered_compaction(self) -> None:
        sizes = [t.file_bytes for t in self.engine._view[2]]
        pick = pick_size_tiered(sizes, 2, 2.0)
        if pick is not None:
            self.engine._bg.compact_range(*pick)

    @rule(data=st.data())
    def partial_compaction(self, data) -> None:
        """Compact a contiguous run that may leave older tables out (as size-tiered does
        when sizes differ), so tombstone purging must check the older tables."""
        n = len(self.engine._view[2])
        if n >= 2:  # leave at least one older table out of the run
            i = data.draw(st.integers(0, n - 2))
            j = data.draw(st.integers(i + 1, n - 1))
            self.engine._bg.compact_range(i, j)

    @rule()
    def restart(self) -> None:
        self.engine.close()
        self.engine = self.open()

    @rule(seconds=st.sampled_from([2.0, 30.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def expected(self, key: bytes) -> Optional[bytes]:
        raise NotImplementedError

    @rule(key=KEYS)
    def get(self, key: bytes) -> None:
        assert self.engine.get(key) == self.expected(key)

    @rule(start=KEYS, end=st.one_of(st.none(), KEYS))
    def scan(self, start: bytes, end: Optional[bytes]) -> None:
        got = list(self.engine.scan(start, end))
        keys = sorted(k for k in self.model if start <= k and (end is None or k < end))
        want = [(k, self.expected(k)) for k in keys]
        assert got == [(k, v) for k, v in want if v is not None]


class LwwMachine(EngineMachine):
    """Last-write-wins with deletes and TTLs."""

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[bytes, tuple[bytes, Optional[float]]] = {}

    def expected(self, key: bytes) -> Optional[bytes]:
        if key not in self.model:
            return None
        value, expire = self.model[key]
        return None if expire is not None and expire <= self.clock.now() else value

    @rule(key=KEYS, value=VALUES)
    def put(self, key: bytes, value: bytes) -> None:
        self.engine.put(key, value)
        self.model[key] = (value, None)

    @rule(key=KEYS, value=VALUES, ttl=st.sampled_from([1.0, 20.0]))
    def put_ttl(self, key: bytes, value: bytes, ttl: float) -> None:
        self.engine.put(key, value, ttl=ttl)
        self.model[key] = (value, self.clock.now() + ttl)

    @rule(key=KEYS)
    def delete(self, key: bytes) -> None:
        self.engine.delete(key)
        self.model.pop(key, None)


class MergeMachine(EngineMachine):
    """Set-union merge: puts add members, deletes clear the set."""

    merge = staticmethod(union)

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[bytes, set[bytes]] = {}

    def expected(self, key: bytes) -> Optional[bytes]:
        if key not in self.model:
            return None
        return b",".join(sorted(self.model[key]))

    @rule(key=KEYS, member=st.sampled_from([b"m1", b"m2", b"m3", b"m4"]))
    def add(self, key: bytes, member: bytes) -> None:
        self.engine.put(key, member)
        self.model.setdefault(key, set()).add(member)

    @rule(key=KEYS, members=st.sets(st.sampled_from([b"m1", b"m2", b"m3", b"m4"]), min_size=1))
    def put_base(self, key: bytes, members: set[bytes]) -> None:
        """A base put (what a coordinator writes) replaces the set: older members it does
        not hold must not come back, through flushes, compactions and restarts."""
        assert self.engine.aput_nowait(key, b",".join(sorted(members)), base=True) is None
        self.model[key] = set(members)

    @rule(key=KEYS)
    def delete(self, key: bytes) -> None:
        self.engine.delete(key)
        self.model.pop(key, None)


TestLwwModel = LwwMachine.TestCase
TestLwwModel.settings = SETTINGS
TestMergeModel = MergeMachine.TestCase
TestMergeModel.settings = SETTINGS
