"""ringkv: a distributed, highly available key-value store (Dynamo / Riak / Cassandra line)."""

__version__ = "0.1.0"
