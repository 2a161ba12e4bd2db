"""ringkv.storage: the per-node LSM storage engine (commit log, memtable, SSTables).

See docs/architecture.md for the Engine contract and docs/format/ for the byte layouts.
"""

from ringkv.storage.engine import Engine

__all__ = ["Engine"]
