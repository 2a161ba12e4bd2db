"""The one configuration tree of ringkv: frozen dataclasses, a default beside every field.

Invariants: every knob lives here and nowhere else; every field has a documented
default (the comment after it); :meth:`RingkvConfig.validate` is called once at start-up
and raises :class:`~ringkv.errors.ConfigError` naming the field. Configuration is passed
explicitly (never global), so a simulator can run many nodes with different configs in one
process. ``docs/configuration.md`` is generated from this file (``python -m ringkv.config``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ringkv.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class StorageConfig:
    """The per-node LSM storage engine (``ringkv.storage``)."""

    sync_mode: str = "batch"  # commit log sync: "batch" (group commit, ack after fsync), "periodic", "off"
    sync_period_ms: int = 10  # periodic mode: fsync at least this often; a crash loses at most this window
    group_commit_window_us: int = 0  # batch mode, under load (see group_commit_min_writes): least time from one group commit's end to the next fsync; more writes per fsync and less CPU per write, each of them waiting up to this long; 0 = fsync as soon as woken (and only 0 lets the native fsync thread, D30, sync the event loop's writes)
    group_commit_min_writes: int = 8  # batch mode: the window above applies only when at least this many durability waits are pending when the syncer wakes (one per request; a pipelined RESP group or a replica batch waits once for all its writes); fewer (a lone or sequential writer) are synced at once
    inline_sync_min_records: int = 64  # batch mode: an event-loop turn that appended at least this many commit-log records fsyncs them itself at the end of the turn (as Redis does) instead of handing them to the syncer thread; fewer go to the thread, so the loop keeps working while they sync; 0 = always the thread
    fsync_thread_batch_sched: bool = True  # batch mode: the native fsync thread (D30) runs under Linux's SCHED_BATCH policy, so its wakeups when an fsync ends do not preempt a busy event loop (docs/decisions.md D34); false = the normal policy
    segment_bytes: int = 32 * MiB  # commit log segment size before rolling to a new file
    preallocate_segments: bool = True  # write each next commit-log segment full of zeros (and sync it) in the background before it is used, so an fsync of the log commits no change of file size: on ext4 about 0.7x the time and CPU of an fsync of a growing file (bench/fsync_prealloc.py; docs/decisions.md D43); costs one extra write of each segment, and keeps up to two segments' worth of disk; a segment is prepared only while the disk has 2 x segment_bytes + min_free_bytes free, so the zeros never fill it; ignored with sync_mode 'off', which never fsyncs; false = segments grow as they are appended to
    memtable_bytes: int = 32 * MiB  # memtable size that triggers a flush to an SSTable
    max_pending_flushes: int = 2  # immutable memtables waiting to flush before writers are slowed
    block_bytes: int = 4 * KiB  # SSTable data block size (uncompressed)
    compression: str = "none"  # SSTable block compression: "none" or "zlib"
    bloom_fp_rate: float = 0.01  # bloom filter false-positive rate per SSTable
    block_cache_bytes: int = -1  # checked-block cache shared by all SSTables, filled as blocks are read; -1 = auto: 1/8 of the memory this process may use (RAM, or its cgroup's limit), at least 32 MiB and at most 1 GiB (docs/decisions.md D25); 0 = no cache
    compaction: str = "size_tiered"  # compaction strategy: "size_tiered" or "none"
    compaction_min_threshold: int = 4  # size-tiered: SSTables of similar size needed to compact
    compaction_bucket_ratio: float = 2.0  # size-tiered: sizes within this ratio share a bucket
    gc_grace_seconds: float = 864000.0  # tombstones older than this may be dropped by compaction (10 days)
    min_free_bytes: int = 256 * MiB  # writes are refused (StorageFull: nothing written) while the data directory's file system has less free space than this, so the disk never fills under the commit log, a flush or a compaction; they resume by themselves once space is freed (docs/decisions.md D36); keep it above memtable_bytes x (max_pending_flushes + 1) + 2 x segment_bytes; 0 = no check

    def validate(self) -> None:
        _one_of("storage.sync_mode", self.sync_mode, ("batch", "periodic", "off"))
        _one_of("storage.compression", self.compression, ("none", "zlib"))
        _one_of("storage.compaction", self.compaction, ("size_tiered", "none"))
        _positive("storage.segment_bytes", self.segment_bytes)
        _positive("storage.memtable_bytes", self.memtable_bytes)
        _positive("storage.block_bytes", self.block_bytes)
        _positive("storage.max_pending_flushes", self.max_pending_flushes)
        if self.block_cache_bytes < -1:
            raise ConfigError("storage.block_cache_bytes", "must be >= 0, or -1 (auto)")
        if not 0.0 < self.bloom_fp_rate < 0.5:
            raise ConfigError("storage.bloom_fp_rate", "must be in (0, 0.5)")
        if self.compaction_min_threshold < 2:
            raise ConfigError("storage.compaction_min_threshold", "must be >= 2")
        if not 0 <= self.group_commit_window_us <= 1_000_000:
            raise ConfigError("storage.group_commit_window_us", "must be in [0, 1000000]")
        _positive("storage.group_commit_min_writes", self.group_commit_min_writes)
        if self.inline_sync_min_records < 0:
            raise ConfigError("storage.inline_sync_min_records", "must be >= 0")
        if self.min_free_bytes < 0:
            raise ConfigError("storage.min_free_bytes", "must be >= 0 (0 = no check)")


@dataclass(frozen=True)
class LimitsConfig:
    """Sizes past which a request is refused with ``TooLarge``."""

    max_key_bytes: int = 1 * KiB  # largest key a client may write
    max_value_bytes: int = 1 * MiB  # largest value a client may write
    max_frame_bytes: int = 16 * MiB  # largest wire frame accepted (client and internode)
    max_siblings: int = 64  # a key with more live siblings refuses further blind writes (Overloaded)
    max_connections: int = 10_000  # connections the RPC, HTTP and RESP ports each hold at once; more are refused (Overloaded; HTTP 503; RESP: max number of clients); lowered at start to fit the open-files limit

    def validate(self) -> None:
        _positive("limits.max_key_bytes", self.max_key_bytes)
        _positive("limits.max_value_bytes", self.max_value_bytes)
        _positive("limits.max_connections", self.max_connections)
        if self.max_frame_bytes < self.max_key_bytes + self.max_value_bytes + 4 * KiB:
            raise ConfigError("limits.max_frame_bytes", "must exceed max key + max value + 4 KiB")


@dataclass(frozen=True)
class ClusterConfig:
    """Replication and default consistency for requests that name none."""

    replication: dict[str, int] = field(default_factory=lambda: {"dc1": 3})  # replicas per data center
    read_level: str = "QUORUM"  # default R when a request names none
    write_level: str = "QUORUM"  # default W when a request names none
    request_timeout_ms: int = 2000  # coordinator waits this long for R/W replies before Timeout
    read_repair: bool = True  # after a get, write the merged version to replicas that were stale
    full_read_chance: float = 0.1  # share of reads sent to every live replica (not just R), so read repair sees them all

    def validate(self) -> None:
        if not self.replication or any(n < 1 for n in self.replication.values()):
            raise ConfigError("cluster.replication", "needs at least one dc with >= 1 replica")
        _positive("cluster.request_timeout_ms", self.request_timeout_ms)
        if not 0.0 <= self.full_read_chance <= 1.0:
            raise ConfigError("cluster.full_read_chance", "must be in [0, 1]")


@dataclass(frozen=True)
class MembershipConfig:
    """Gossip membership and the failure detector (``ringkv.membership``)."""

    gossip_interval_s: float = 1.0  # node.py calls tick() this often; everything below is in seconds
    fanout: int = 3  # peers gossiped to per tick (push-pull): news reaches n nodes in ~log4(n) ticks
    suspect_after_s: float = 5.0  # no liveness evidence for this long -> suspected (5 missed gossip rounds)
    probe_count: int = 3  # other members asked to ping a suspect for us (SWIM indirect probe)
    probe_interval_s: float = 1.0  # while a peer stays suspected, probe it again this often
    min_agreeing: int = 2  # nodes (self included) that must find a peer stale before it is down; 1 = no agreement

    def validate(self) -> "MembershipConfig":
        """Raise ConfigError naming the first bad field; return self."""
        for name in ("gossip_interval_s", "suspect_after_s", "probe_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"membership.{name}", "must be > 0")
        if self.fanout < 1:
            raise ConfigError("membership.fanout", "must be >= 1")
        if self.probe_count < 0:
            raise ConfigError("membership.probe_count", "must be >= 0")
        if self.min_agreeing < 1:
            raise ConfigError("membership.min_agreeing", "must be >= 1")
        if self.suspect_after_s < 2 * self.gossip_interval_s:
            raise ConfigError("membership.suspect_after_s", "must be >= 2 gossip intervals")
        return self


@dataclass(frozen=True)
class HintsConfig:
    """Sloppy quorum and hinted handoff (``ringkv.hints``)."""

    mode: str = "sloppy"  # "sloppy": a down replica's write goes to a stand-in node as a hint that counts toward W (AP); "strict": W needs live home replicas, hints kept but never counted (CP); "off": no hints at all. See docs/hints.md
    max_hints_per_target: int = 100_000  # hints kept for one down node; past it new hints are refused (counted)
    max_hint_age_s: float = 3 * 3600.0  # hints older than this are dropped (repair covers them)
    replay_interval_s: float = 1.0  # how often a node looks for live targets with pending hints
    replay_batch: int = 64  # hints sent to a target concurrently (replica_put) before awaiting their acks

    def validate(self) -> None:
        _one_of("hints.mode", self.mode, ("sloppy", "strict", "off"))
        _positive("hints.max_hints_per_target", self.max_hints_per_target)
        _positive("hints.max_hint_age_s", self.max_hint_age_s)
        _positive("hints.replay_interval_s", self.replay_interval_s)
        _positive("hints.replay_batch", self.replay_batch)


@dataclass(frozen=True)
class RepairConfig:
    """Merkle-tree anti-entropy (``ringkv.antientropy``)."""

    interval_s: float = 3600.0  # background repair of this node's ranges every so often; 0 = off
    tree_cache_bytes: int = 256 * MiB  # Merkle trees kept between repairs (refreshed from the writes since, not rebuilt), estimated bytes; a 1M-key range is ~170 MB; 0 = keep none (every repair scans its ranges in full)
    tree_cache_trees: int = 256  # at most this many kept trees (one per range and depth); least recently used dropped first
    tree_max_age_s: float = 86400.0  # a kept tree older than this is rebuilt by a full scan (catches data changed without a write: tombstones purged by compaction)

    def validate(self) -> None:
        if self.interval_s < 0:
            raise ConfigError("repair.interval_s", "must be >= 0")
        if self.tree_cache_bytes < 0:
            raise ConfigError("repair.tree_cache_bytes", "must be >= 0")
        if self.tree_cache_trees < 0:
            raise ConfigError("repair.tree_cache_trees", "must be >= 0")
        _positive("repair.tree_max_age_s", self.tree_max_age_s)


@dataclass(frozen=True)
class StreamingConfig:
    """Range streaming on join, decommission and removenode (``ringkv.streaming``)."""

    batch_bytes: int = 1 * MiB  # keys are streamed in batches of about this size
    join: bool = False  # first start (empty data_dir): join as "joining", stream this node's ranges, then go normal (ringkv server --join); false = start normal at once (a fresh cluster)
    replace: str = ""  # first start: take the tokens of this dead node id and stream its data from the survivors (ringkv server --replace ID; this node needs a new id)
    max_bytes_per_s: int = 0  # streaming throttle per operation; 0 = unthrottled
    settle_timeout_s: float = 30.0  # wait at most this long for every live node to see a joining/leaving state before streaming
    handover_s: float = 30.0  # after a join finishes, writes of the moved ranges still go to their previous replicas (W + P) this long, for coordinators that hear of it late; 0 = off
    batch_timeout_s: float = 30.0  # one stream_range or stream_apply call fails after this long (then retried)
    retry_interval_s: float = 2.0  # pause before a failed operation is retried (3 attempts, then it stays failed)
    exit_after_decommission: bool = True  # the server process exits once its decommission is done

    def validate(self) -> None:
        _positive("streaming.batch_bytes", self.batch_bytes)
        if self.max_bytes_per_s < 0:
            raise ConfigError("streaming.max_bytes_per_s", "must be >= 0")
        _positive("streaming.settle_timeout_s", self.settle_timeout_s)
        _positive("streaming.batch_timeout_s", self.batch_timeout_s)
        if self.handover_s < 0:
            raise ConfigError("streaming.handover_s", "must be >= 0")
        if self.retry_interval_s < 0:
            raise ConfigError("streaming.retry_interval_s", "must be >= 0")
        if self.join and self.replace:
            raise ConfigError("streaming.replace", "join and replace exclude each other")


@dataclass(frozen=True)
class NodeConfig:
    """Identity and addresses of one node."""

    node_id: str = ""  # unique name; "" = generated once and stored in data_dir/node.toml
    host: str = "127.0.0.1"  # address to bind and advertise (secure default: loopback only)
    port: int = 7400  # internode + client RPC port (msgpack frames)
    http_port: int = 0  # HTTP/JSON API and /metrics; 0 = port + 1000
    resp_port: int = 0  # Redis protocol (RESP2) port; 0 = port + 2000, -1 = do not serve RESP
    data_dir: str = "./data"  # where node.toml, commitlog/, sstables/ and hints/ live
    seeds: tuple[str, ...] = ()  # "host:port" of nodes to contact at start
    dc: str = "dc1"  # data center name
    rack: str = "rack1"  # rack name
    num_tokens: int = 64  # virtual nodes (tokens) this node owns; see docs/ring-balance.md
    gc_young_threshold: int = 50_000  # allocations between young-generation collections of the server process's cyclic GC (Python's default, 700, made GC ~9% of a loaded node's main thread: docs/decisions.md D29); 0 = Python's default

    def validate(self) -> None:
        if self.gc_young_threshold < 0:
            raise ConfigError("node.gc_young_threshold", "must be >= 0 (0 = Python's default)")
        if not 0 < self.port < 65536:
            raise ConfigError("node.port", "must be in 1..65535")
        if not -1 <= self.resp_port < 65536:
            raise ConfigError("node.resp_port", "must be -1 (off), 0 (port + 2000) or a port")
        _positive("node.num_tokens", self.num_tokens)

    def effective_http_port(self) -> int:
        """The HTTP port actually used."""
        return self.http_port or self.port + 1000

    def effective_resp_port(self) -> int:
        """The RESP port actually used; 0 when RESP is switched off."""
        if self.resp_port < 0:
            return 0
        return self.resp_port or self.port + 2000


@dataclass(frozen=True)
class SecurityConfig:
    """Who may use a node's ports, and how they are encrypted (``ringkv.net.auth``,
    ``ringkv.net.tls``; docs/operations.md, "Security")."""

    secret_file: str = ""  # file holding the cluster secret, at least 16 bytes (e.g. made with `openssl rand -hex 32 > FILE`, mode 600); when set, every connection to the RPC port, from peers and clients alike, must prove it knows the secret before any request, every HTTP request must carry it (Authorization: Bearer), and every RESP connection must AUTH with it; "" = no authentication
    tls_cert_file: str = ""  # PEM certificate (chain) this node presents; with tls_key_file and tls_ca_file set, the RPC, HTTP and RESP ports serve TLS only and peers are dialed with TLS (docs/decisions.md D33); "" = plaintext
    tls_key_file: str = ""  # PEM private key of tls_cert_file
    tls_ca_file: str = ""  # PEM CA bundle the peers' certificates (and clients' ones, when they present one) are checked against
    tls_require_client_cert: bool = False  # also refuse clients that present no certificate signed by tls_ca_file (mutual TLS for clients too; peers always present theirs)
    tls_check_hostname: bool = True  # a node dialing a peer checks that the peer's certificate names the host it dialed (false: certificates shared by every node, or naming no host)

    def validate(self) -> None:
        for name in ("secret_file", "tls_cert_file", "tls_key_file", "tls_ca_file"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"security.{name}", "must be a path (a string)")
        tls = [bool(self.tls_cert_file), bool(self.tls_key_file), bool(self.tls_ca_file)]
        if any(tls) and not all(tls):
            raise ConfigError("security.tls_cert_file", "TLS needs tls_cert_file, tls_key_file "
                                                        "and tls_ca_file, all three")
        if self.tls_require_client_cert and not self.tls_ca_file:
            raise ConfigError("security.tls_require_client_cert", "needs TLS (tls_ca_file)")

    @property
    def tls(self) -> bool:
        """True when the node's ports speak TLS."""
        return bool(self.tls_cert_file)


@dataclass(frozen=True)
class RingkvConfig:
    """The whole configuration of one node."""

    node: NodeConfig = field(default_factory=NodeConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    hints: HintsConfig = field(default_factory=HintsConfig)
    repair: RepairConfig = field(default_factory=RepairConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)

    def validate(self) -> "RingkvConfig":
        """Check every section; raise ConfigError naming the bad field. Returns self."""
        for section in (self.node, self.cluster, self.storage, self.limits, self.membership,
                        self.hints, self.repair, self.streaming, self.security):
            section.validate()
        return self

    @classmethod
    def sim(cls) -> "RingkvConfig":
        """Preset for the deterministic simulator: tiny memtables so flushes happen often."""
        return cls(storage=StorageConfig(memtable_bytes=256 * KiB, block_cache_bytes=4 * MiB))

    @classmethod
    def load(cls, path: str | Path, **overrides: dict[str, Any]) -> "RingkvConfig":
        """Read a TOML file whose tables are the sections ([node], [cluster], ...)."""
        with open(path, "rb") as f:
            data = tomllib.load(f)
        for section, values in overrides.items():
            data.setdefault(section, {}).update(values)
        return from_dict(data)


def from_dict(data: dict[str, Any]) -> RingkvConfig:
    """Build a config from nested dicts, rejecting unknown sections and fields."""
    kwargs = {}
    known = {f.name: f for f in fields(RingkvConfig)}
    for section, values in data.items():
        if section not in known:
            raise ConfigError(section, "unknown section")
        section_cls = known[section].default_factory  # type: ignore[misc]
        if not isinstance(values, dict):
            raise ConfigError(section, f"must be a table ([{section}]), not {_toml_kind(values)}")
        types = {f.name: f.type for f in fields(section_cls)}
        for name, value in values.items():
            if name not in types:
                raise ConfigError(f"{section}.{name}", "unknown field")
            _check_type(f"{section}.{name}", str(types[name]), value)
        vals = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        kwargs[section] = section_cls(**vals)
    return RingkvConfig(**kwargs)


# A field's annotation (a string: ``from __future__ import annotations``) -> the TOML
# values it takes. An int is accepted for a float; a bool is never taken for a number.
_ACCEPTS: dict[str, tuple[type, ...]] = {"bool": (bool,), "int": (int,), "float": (int, float),
                                         "str": (str,), "tuple": (list, tuple), "dict": (dict,)}
_NAMES = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
          "tuple": "an array", "dict": "a table"}


def _check_type(name: str, annotation: str, value: Any) -> None:
    """ConfigError naming ``name`` unless ``value`` fits its field's annotation (checked at
    load time so that a quoted number is reported as such, not as a failure far away)."""
    bases = [part.strip().split("[")[0] for part in annotation.split("|")]
    if any(b not in _ACCEPTS and b != "None" for b in bases):
        return  # a type this table does not know: the section's validate() decides
    for b in bases:
        if b in _ACCEPTS and isinstance(value, _ACCEPTS[b]) and not (
                isinstance(value, bool) and b in ("int", "float")):
            return
    wanted = " or ".join(_NAMES[b] for b in bases if b in _NAMES)
    raise ConfigError(name, f"must be {wanted}, not {_toml_kind(value)} {value!r}")


def _toml_kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def with_overrides(config: Any, **changes: Any) -> Any:
    """Return a copy of a config section with some fields replaced."""
    return replace(config, **changes)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"{value!r} is not one of {', '.join(allowed)}")


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(name, "must be > 0")


def render_markdown() -> str:
    """Render docs/configuration.md from the dataclass tree and its comments."""
    import inspect
    import re

    lines = ["# Configuration", "",
             "Generated from `ringkv/config.py` by `python -m ringkv.config`. Every field can be",
             "set in the node's TOML file under its section, e.g. `[storage]` `sync_mode = \"batch\"`.", ""]
    source = inspect.getsource(inspect.getmodule(RingkvConfig))  # type: ignore[arg-type]
    for f in fields(RingkvConfig):
        cls = f.default_factory  # type: ignore[misc]
        lines += [f"## [{f.name}]", "", (cls.__doc__ or "").strip(), "",
                  "| field | default | meaning |", "| --- | --- | --- |"]
        for sf in fields(cls):
            default = getattr(cls(), sf.name)
            m = re.search(rf"^\s+{sf.name}: .*?#\s*(.*)$", source, re.M)
            lines.append(f"| `{sf.name}` | `{default!r}` | {m.group(1) if m else ''} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_markdown())

__all__ = ["StorageConfig", "LimitsConfig", "MembershipConfig", "HintsConfig", "RepairConfig",
           "StreamingConfig", "ClusterConfig", "NodeConfig", "RingkvConfig",
           "from_dict", "with_overrides"]
