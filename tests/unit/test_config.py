"""The config tree: defaults validate, bad values name their field, docs stay generated."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from ringkv.config import RingkvConfig, from_dict, render_markdown
from ringkv.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_and_presets_validate():
    for cfg in (RingkvConfig(), RingkvConfig.sim()):
        assert cfg.validate() is cfg


@pytest.mark.parametrize("data, field", [
    ({"storage": {"sync_mode": "sometimes"}}, "storage.sync_mode"),
    ({"storage": {"bloom_fp_rate": 0.9}}, "storage.bloom_fp_rate"),
    ({"node": {"port": 70000}}, "node.port"),
    ({"node": {"resp_port": -5}}, "node.resp_port"),
    ({"node": {"gc_young_threshold": -1}}, "node.gc_young_threshold"),
    ({"cluster": {"replication": {}}}, "cluster.replication"),
    ({"membership": {"fanout": 0}}, "membership.fanout"),
    ({"limits": {"max_frame_bytes": 10}}, "limits.max_frame_bytes"),
    ({"nonsense": {}}, "nonsense"),
    ({"node": {"colour": "blue"}}, "node.colour"),
])
def test_bad_values_name_their_field(data, field):
    with pytest.raises(ConfigError) as err:
        from_dict(data).validate()
    assert err.value.field == field


@pytest.mark.parametrize("data, field, says", [
    ({"storage": {"min_free_bytes": "lots"}}, "storage.min_free_bytes", "must be an integer, not a string"),
    ({"storage": {"memtable_bytes": 1.5}}, "storage.memtable_bytes", "must be an integer, not a number"),
    ({"storage": {"memtable_bytes": True}}, "storage.memtable_bytes", "not a boolean"),
    ({"storage": {"fsync_thread_batch_sched": 1}}, "storage.fsync_thread_batch_sched", "must be true or false"),
    ({"storage": {"sync_mode": 3}}, "storage.sync_mode", "must be a string"),
    ({"node": {"seeds": "127.0.0.1:7401"}}, "node.seeds", "must be an array"),  # used to pass
    ({"cluster": {"replication": 3}}, "cluster.replication", "must be a table"),
    ({"storage": 3}, "storage", "must be a table"),
])
def test_values_of_the_wrong_type_name_their_field_and_type(data, field, says):
    """Checked at load: a quoted number used to fail far away ("'<' not supported between
    instances of 'str' and 'int'"), and a string for the seeds array or true for a size
    passed validation (memtable_bytes = true was a 1-byte memtable)."""
    with pytest.raises(ConfigError) as err:
        from_dict(data).validate()
    assert err.value.field == field and says in str(err.value)


def test_an_integer_is_a_number():
    cfg = from_dict({"storage": {"bloom_fp_rate": 0, "gc_grace_seconds": 60}})
    assert cfg.storage.gc_grace_seconds == 60
    with pytest.raises(ConfigError, match="bloom_fp_rate"):
        cfg.validate()


def test_toml_load_with_lists(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('[node]\nseeds = ["127.0.0.1:7401"]\nport = 7500\n[cluster]\nreplication = {dc1 = 2}\n')
    cfg = RingkvConfig.load(path).validate()
    assert cfg.node.seeds == ("127.0.0.1:7401",)
    assert cfg.node.effective_http_port() == 8500
    assert cfg.node.effective_resp_port() == 9500
    assert cfg.cluster.replication == {"dc1": 2}


def test_configuration_doc_is_generated_from_the_tree():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert doc.strip() == render_markdown().strip(), \
        "docs/configuration.md is stale: run `python -m ringkv.config > docs/configuration.md`"


def test_max_connections_is_lowered_to_fit_the_open_files_limit(caplog):
    from ringkv.server import FILES_RESERVE, MIN_CONNECTIONS, PORTS, fit_connections

    cfg = RingkvConfig()
    assert fit_connections(cfg, 1 << 20) is cfg  # plenty: unchanged
    fitted = fit_connections(cfg, 4096)
    assert fitted.limits.max_connections == (4096 - FILES_RESERVE) // PORTS
    assert fitted.limits.max_frame_bytes == cfg.limits.max_frame_bytes  # nothing else moves
    assert fit_connections(cfg, 300).limits.max_connections == MIN_CONNECTIONS
    chosen = dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits,
                                                                 max_connections=50_000))
    with caplog.at_level(logging.INFO, logger="ringkv.server"):
        fit_connections(chosen, 20_000)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]  # the operator's choice
