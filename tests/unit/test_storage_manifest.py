"""Manifest: atomic replace, round trip, corruption detected."""

from __future__ import annotations

import pytest

from ringkv.errors import Corruption
from ringkv.storage import manifest
from ringkv.storage.fs import OsFileSystem


def test_round_trip_and_replace(tmp_path):
    fs = OsFileSystem()
    assert manifest.load(fs, str(tmp_path)) is None
    manifest.save(fs, str(tmp_path), manifest.ManifestState([3, 2], 4, 100))
    manifest.save(fs, str(tmp_path), manifest.ManifestState([5], 6, 250))
    st = manifest.load(fs, str(tmp_path))
    assert (st.tables, st.next_id, st.flushed_seq) == ([5], 6, 250)
    assert not (tmp_path / manifest.TMP_NAME).exists()


def test_corrupt_manifest_is_reported(tmp_path):
    fs = OsFileSystem()
    manifest.save(fs, str(tmp_path), manifest.ManifestState([1], 2, 3))
    p = tmp_path / manifest.NAME
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x40
    p.write_bytes(bytes(data))
    with pytest.raises(Corruption):
        manifest.load(fs, str(tmp_path))
    p.write_bytes(b"short")
    with pytest.raises(Corruption):
        manifest.load(fs, str(tmp_path))
