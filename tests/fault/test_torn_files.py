"""Torn and corrupt files: a cut commit log replays up to the last whole record (and says
so in the log); a flipped byte before the tail, or anywhere in an SSTable, gives
Corruption and never wrong data."""

from __future__ import annotations

import logging
import os
import random
import shutil

import pytest

from ringkv.config import StorageConfig
from ringkv.errors import Corruption
from ringkv.storage import Engine
from ringkv.storage import commitlog_format as clf
from ringkv.storage import sstable_format as sstf

N = 300
CFG = StorageConfig(sync_mode="off", compaction="none")


def value(i: int) -> bytes:
    return b"value-%d-" % i + b"x" * (i % 37)


@pytest.fixture(scope="module")
def log_template(tmp_path_factory):
    """A data dir whose commit log holds N puts (k0..k{N-1}) not yet in any SSTable."""
    d = tmp_path_factory.mktemp("logtpl")
    e = Engine.open(str(d), CFG)
    for i in range(N):
        e.put(b"k%04d" % i, value(i))
    e.close()  # syncs the log; the memtable is not flushed
    (seg,) = os.listdir(d / "commitlog")
    return d, seg


def record_ends(data: bytes) -> list[int]:
    pos, ends = clf.HEADER_SIZE, []
    while pos < len(data):
        length, _ = clf.FRAME.unpack_from(data, pos)
        pos += 8 + length
        ends.append(pos)
    return ends


def present(e: Engine) -> list[int]:
    out = []
    for i in range(N):
        v = e.get(b"k%04d" % i)
        if v is not None:
            assert v == value(i)
            out.append(i)
    return out


def test_cut_commit_log_replays_whole_records_and_warns(log_template, tmp_path, caplog):
    src, seg = log_template
    data = (src / "commitlog" / seg).read_bytes()
    ends = record_ends(data)
    assert len(ends) == N
    rnd = random.Random(5)
    cuts = [rnd.randrange(clf.HEADER_SIZE + 1, len(data)) for _ in range(12)] + [ends[10] + 3]
    for n, cut in enumerate(cuts):
        d = tmp_path / f"cut{n}"
        shutil.copytree(src, d)
        with open(d / "commitlog" / seg, "r+b") as f:
            f.truncate(cut)
        whole = sum(1 for end in ends if end <= cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ringkv.storage.commitlog_reader"):
            with Engine.open(str(d), CFG) as e:
                assert present(e) == list(range(whole))
        if cut not in ends:
            assert any("torn tail" in r.getMessage() for r in caplog.records), cut


def test_flipped_byte_before_tail_is_corruption(log_template, tmp_path):
    src, seg = log_template
    data = (src / "commitlog" / seg).read_bytes()
    ends = record_ends(data)
    rnd = random.Random(6)
    positions = [rnd.randrange(0, ends[-2]) for _ in range(12)] + [0, clf.HEADER_SIZE, clf.HEADER_SIZE + 2]
    for n, pos in enumerate(positions):
        d = tmp_path / f"flip{n}"
        shutil.copytree(src, d)
        p = d / "commitlog" / seg
        b = bytearray(p.read_bytes())
        b[pos] ^= 1 << rnd.randrange(8)
        p.write_bytes(bytes(b))
        with pytest.raises(Corruption) as info:
            Engine.open(str(d), CFG)
        assert info.value.path.endswith(seg)


@pytest.fixture(scope="module")
def table_template(tmp_path_factory):
    d = tmp_path_factory.mktemp("sstpl")
    e = Engine.open(str(d), StorageConfig(sync_mode="off", compaction="none", block_bytes=512))
    for i in range(N):
        e.put(b"k%04d" % i, value(i))
    e.flush()
    e.close()
    (name,) = os.listdir(d / "sstables")
    return d, name


def flip_copy(src, name, dst, pos, bit) -> None:
    shutil.copytree(src, dst)
    p = dst / "sstables" / name
    b = bytearray(p.read_bytes())
    b[pos] ^= 1 << bit
    p.write_bytes(bytes(b))


def test_flipped_byte_in_sstable_data_block_never_returns_wrong_data(table_template, tmp_path):
    src, name = table_template
    data = (src / "sstables" / name).read_bytes()
    (bloom_off, _), = [sstf.decode_footer(name, 0, data[-sstf.FOOTER.size:])[1]]
    rnd = random.Random(7)
    for n in range(10):
        pos = rnd.randrange(0, bloom_off)
        d = tmp_path / f"data{n}"
        flip_copy(src, name, d, pos, rnd.randrange(8))
        corrupt = 0
        with Engine.open(str(d), CFG) as e:
            for i in range(N):
                try:
                    v = e.get(b"k%04d" % i)
                except Corruption as c:
                    assert c.path.endswith(name) and c.offset <= pos
                    corrupt += 1
                    continue
                assert v == value(i)
            with pytest.raises(Corruption):
                list(e.scan())
        assert corrupt >= 1


def test_flipped_byte_in_index_bloom_meta_or_footer_fails_open(table_template, tmp_path):
    src, name = table_template
    data = (src / "sstables" / name).read_bytes()
    (bloom_off, _) = sstf.decode_footer(name, 0, data[-sstf.FOOTER.size:])[1]
    rnd = random.Random(8)
    positions = [rnd.randrange(bloom_off, len(data)) for _ in range(12)]
    positions += [len(data) - 1, len(data) - sstf.FOOTER.size]  # magic, index offset
    for n, pos in enumerate(positions):
        d = tmp_path / f"meta{n}"
        flip_copy(src, name, d, pos, rnd.randrange(8))
        with pytest.raises(Corruption) as info:
            Engine.open(str(d), CFG)
        assert info.value.path.endswith(name)
