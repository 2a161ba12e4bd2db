"""ringkv: a distributed, highly available key-value store (Dynamo / Riak / Cassandra line)."""

from ringkv import compiled as _compiled

__version__ = "0.1.0"

# Before any compiled module loads: a stale or unwanted extension must not (D21).
_compiled.install()
