"""A node's identity, written once to ``data_dir/node.toml`` and reused on every restart.

Layout (TOML)::

    format = 1
    node_id = "n1"
    dc = "dc1"
    rack = "rack1"
    tokens = ["0x0123456789abcdef", ...]   # hex strings: TOML integers are signed 64-bit

Invariants: the file is written atomically (temp file, fsync, rename, fsync of the
directory) and never rewritten. A restart reads it back; a config that names a different
node id than the one stored is refused (``ConfigError``) rather than silently taking over
another node's data. The token count, dc and rack of a stored identity win over the
config (tokens are fixed once data exists; changing them needs a decommission).
"""

from __future__ import annotations

import random
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from ringkv.atomic_write import write_atomic
from ringkv.config import NodeConfig
from ringkv.errors import ConfigError
from ringkv.ring import generate_tokens

FILE_NAME = "node.toml"
FORMAT = 1


@dataclass(frozen=True)
class Identity:
    node_id: str
    tokens: tuple[int, ...]
    dc: str
    rack: str


def load_or_create(node: NodeConfig) -> Identity:
    """The identity stored in ``node.data_dir``; created (and stored) on first start."""
    path = Path(node.data_dir) / FILE_NAME
    if path.exists():
        ident = read(path)
        if node.node_id and node.node_id != ident.node_id:
            raise ConfigError("node.node_id", f"{path} belongs to node {ident.node_id!r}, "
                                              f"not {node.node_id!r}")
        return ident
    node_id = node.node_id or f"node-{secrets.token_hex(4)}"
    rng = random.Random(secrets.randbits(64))
    ident = Identity(node_id, generate_tokens(rng, node.num_tokens), node.dc, node.rack)
    write(path, ident)
    return ident


def read(path: Path) -> Identity:
    """Parse a node.toml; ConfigError if it is damaged."""
    try:
        data = tomllib.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown format {data.get('format')!r}")
        tokens = tuple(int(t, 16) for t in data["tokens"])
        return Identity(str(data["node_id"]), tokens, str(data["dc"]), str(data["rack"]))
    except (OSError, ValueError, KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("node.data_dir", f"cannot read identity {path}: {exc}") from None


def write(path: Path, ident: Identity) -> None:
    """Write atomically: temp file, fsync, rename, fsync the directory."""
    text = tomli_w.dumps({"format": FORMAT, "node_id": ident.node_id, "dc": ident.dc,
                          "rack": ident.rack, "tokens": [f"0x{t:016x}" for t in ident.tokens]})
    write_atomic(path, "# ringkv node identity: written once, do not edit\n" + text)


__all__ = ["Identity", "load_or_create", "read", "write", "FILE_NAME"]
