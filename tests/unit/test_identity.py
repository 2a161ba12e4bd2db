"""node.toml: written once, reused on restart, refused for another node id."""

from __future__ import annotations

import pytest

from ringkv import identity
from ringkv.config import NodeConfig
from ringkv.errors import ConfigError


def test_created_once_and_reused(tmp_path):
    cfg = NodeConfig(data_dir=str(tmp_path), dc="dc2", rack="r7", num_tokens=8)
    first = identity.load_or_create(cfg)
    assert first.node_id.startswith("node-") and len(first.tokens) == 8
    assert (first.dc, first.rack) == ("dc2", "r7")
    assert all(0 <= t < 2**64 for t in first.tokens)
    again = identity.load_or_create(NodeConfig(data_dir=str(tmp_path), num_tokens=99))
    assert again == first  # stored tokens, dc and rack win over a changed config


def test_full_64_bit_tokens_round_trip(tmp_path):
    ident = identity.Identity("n1", (0, 2**63, 2**64 - 1), "dc1", "rack1")
    identity.write(tmp_path / identity.FILE_NAME, ident)
    assert identity.read(tmp_path / identity.FILE_NAME) == ident


def test_explicit_node_id_must_match(tmp_path):
    identity.load_or_create(NodeConfig(node_id="n1", data_dir=str(tmp_path)))
    assert identity.load_or_create(NodeConfig(node_id="n1", data_dir=str(tmp_path))).node_id == "n1"
    with pytest.raises(ConfigError):
        identity.load_or_create(NodeConfig(node_id="n2", data_dir=str(tmp_path)))


def test_damaged_file_is_a_config_error(tmp_path):
    (tmp_path / identity.FILE_NAME).write_text("format = 1\nnode_id = ")
    with pytest.raises(ConfigError):
        identity.load_or_create(NodeConfig(data_dir=str(tmp_path)))
