"""The ``ringkv`` command line: run a node, run a local cluster, talk to a cluster.

Commands::

    ringkv server --config node.toml [flags]     run one node (blocks)
    ringkv cluster up|down|status [--dir D]      a local cluster of real node processes
    ringkv put KEY VALUE | get KEY | delete KEY  client requests
    ringkv status | ring                         cluster view, like ``nodetool status|ring``
    ringkv repair [--range START:END]            Merkle anti-entropy of a node, with progress

Client commands go to ``--host``, else to the first running node of the local cluster in
``$RINGKV_CLUSTER_DIR`` or ``.ringkv-cluster``, else to 127.0.0.1:7400.

Errors never print a traceback: one line on stderr and an exit code (docs/operations.md):
1 key not found, 2 usage or configuration error, 3 the command failed (Unavailable,
Timeout, TooLarge, a node that would not start, ...), 4 cannot reach the node, 130 interrupted.
"""

from __future__ import annotations

import base64
import binascii
import errno
import functools
import json
import os
import re
import shutil
import signal
import sys
import time
import tomllib
from typing import Any, Callable

import click

from ringkv import localcluster as lc
from ringkv.config import RingkvConfig, SecurityConfig, from_dict
from ringkv.errors import ConfigError, RingkvError
from ringkv.cluster_view import ClusterView, pending_hints
from ringkv.cluster_view import console as make_console
from ringkv.localcluster import LocalCluster, LocalClusterError

EXIT_NOT_FOUND, EXIT_USAGE, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 1, 2, 3, 4, 130


def fail(message: str, code: int) -> None:
    """Print one line on stderr and exit with ``code``."""
    click.echo(f"ringkv: {message}", err=True)
    sys.exit(code)


def friendly_errors(fn: Callable) -> Callable:
    """Turn every expected failure into one stderr line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            fail(f"configuration error: {exc}", EXIT_USAGE)
        except LocalClusterError as exc:
            fail(str(exc), EXIT_FAILED)
        except RingkvError as exc:
            if getattr(exc, "peer_unreachable", False):
                fail(unreachable_message(exc), EXIT_UNREACHABLE)
            name, text = type(exc).__name__, str(exc)
            fail(text if text.lower().startswith(name.lower()) else f"{name}: {text}", EXIT_FAILED)
        except BrokenPipeError:  # stdout closed early (`ringkv ring --all | head`): stop quietly
            _stdout_to_devnull()
            sys.exit(1)
        except ConnectionError as exc:
            fail(f"cannot reach the node: {exc}", EXIT_UNREACHABLE)
        except OSError as exc:
            fail(str(exc), EXIT_FAILED)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)

    return wrapper


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def say(message: str) -> None:
    """Progress output that must never abort the work it reports (a closed pipe is ignored)."""
    try:
        click.echo(message)
    except BrokenPipeError:
        _stdout_to_devnull()


def unreachable_message(exc: BaseException, address: str | None = None) -> str:
    """'cannot reach host:port (reason); is the cluster running? ...' from a transport error."""
    m = re.search(r"connect to (\S+?):? (timed out|[^()]*)", str(exc))
    if m:
        where, why = m.group(1), m.group(2)
    else:
        where, why = address or "the node", f"no ringkv node answered: {exc}"
    return (f"cannot reach {where} ({why}); is the cluster running? "
            "('ringkv cluster up' starts one; --host names another node)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ringkv", prog_name="ringkv")
def cli() -> None:
    """ringkv: a distributed key-value store (Dynamo / Riak / Cassandra line)."""


# ---------------------------------------------------------------- server


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--node-id", help="Unique node name (default: generated once, kept in the data dir).")
@click.option("--host", help="Address to bind and advertise (default 127.0.0.1).")
@click.option("--port", type=int, help="RPC port (default 7400).")
@click.option("--http-port", type=int, help="HTTP port (default: port + 1000).")
@click.option("--data-dir", help="Data directory (default ./data).")
@click.option("--seeds", help="Comma-separated host:port of nodes to contact at start.")
@click.option("--dc", help="Data center name (default dc1).")
@click.option("--rack", help="Rack name (default rack1).")
@click.option("--num-tokens", type=int, help="Virtual nodes owned by this node.")
@click.option("--sync-mode", type=click.Choice(["batch", "periodic", "off"]), help="Commit log sync mode.")
@click.option("--secret-file", help="File holding the cluster secret (>= 16 bytes); every RPC "
                                    "connection must prove it (default: none).")
@click.option("--tls-cert-file", help="PEM certificate to serve TLS with on every port (with "
                                      "--tls-key-file and --tls-ca-file; default: plaintext).")
@click.option("--tls-key-file", help="PEM private key of --tls-cert-file.")
@click.option("--tls-ca-file", help="PEM CA bundle peers' certificates are checked against.")
@click.option("--join", "join", is_flag=True, default=None,
              help="First start: join a cluster that has data (stream this node's ranges first).")
@click.option("--replace", "replace_id", metavar="NODE_ID",
              help="First start: take the tokens of this dead node and stream its data.")
@friendly_errors
def server(config_path: str | None, sync_mode: str | None, join: bool | None = None,
           replace_id: str | None = None, **node: Any) -> None:
    """Run one node in the foreground until SIGTERM or Ctrl-C."""
    from ringkv.topology_cli import with_membership_flags

    config = with_membership_flags(server_config(config_path, node, sync_mode), join, replace_id)
    from ringkv.server import serve

    try:
        serve(config)
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # e.g. the port is taken: not a client-side "cannot reach"
        hint = ""
        if exc.errno == errno.ENOSPC:  # opening replays the commit log into a new SSTable
            hint = (f" (opening the engine writes the commit log's records to a new table: "
                    f"free space in {config.node.data_dir}; nothing was lost, the commit log "
                    "is kept until that table is written)")
        fail(f"cannot start the node on {config.node.host}:{config.node.port}: {exc}{hint}",
             EXIT_FAILED)


def server_config(config_path: str | None, node: dict[str, Any], sync_mode: str | None) -> RingkvConfig:
    """The TOML file (if any) with the flags that were given laid over it, validated."""
    overrides: dict[str, dict[str, Any]] = {}
    node = {k: v for k, v in node.items() if v is not None}
    security = {name: os.path.abspath(node.pop(name))
                for name in ("secret_file", "tls_cert_file", "tls_key_file", "tls_ca_file")
                if name in node}
    if security:
        overrides["security"] = security
    if "seeds" in node:
        node["seeds"] = [s.strip() for s in node["seeds"].split(",") if s.strip()]
    if node:
        overrides["node"] = node
    if sync_mode:
        overrides["storage"] = {"sync_mode": sync_mode}
    if config_path is None:
        return from_dict(overrides).validate()
    try:
        return RingkvConfig.load(config_path, **overrides).validate()
    except FileNotFoundError:
        raise ConfigError("--config", f"file not found: {config_path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{config_path} is not valid TOML: {exc}") from None
    except TypeError as exc:  # a value of the wrong shape, e.g. a table where a number goes
        raise ConfigError("--config", f"{config_path}: {exc}") from None


# ---------------------------------------------------------------- cluster


@cli.group()
def cluster() -> None:
    """A local cluster of real node processes, for development and tests."""


dir_option = click.option("--dir", "directory", default=None,
                          help="Cluster directory (default $RINGKV_CLUSTER_DIR or .ringkv-cluster).")


@cluster.command("up")
@click.option("--nodes", default=5, show_default=True, help="Number of nodes.")
@dir_option
@click.option("--base-port", default=lc.DEFAULT_BASE_PORT, show_default=True,
              help="RPC port of the first node; node i uses base+i-1 (HTTP: 1000 above).")
@click.option("--rf", default=3, show_default=True, help="Replication factor (at most --nodes).")
@click.option("--foreground", is_flag=True, help="Stay attached; Ctrl-C stops every node.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the cluster to serve.")
@click.option("--secret-file", type=click.Path(dir_okay=False, exists=True),
              help="Cluster secret (>= 16 bytes) every RPC connection must prove; client "
                   "commands use it too (docs/operations.md, Security).")
@click.option("--tls-cert-file", type=click.Path(dir_okay=False, exists=True),
              help="PEM certificate every node presents (TLS on all ports; with --tls-key-file "
                   "and --tls-ca-file).")
@click.option("--tls-key-file", type=click.Path(dir_okay=False, exists=True), help="Its PEM key.")
@click.option("--tls-ca-file", type=click.Path(dir_okay=False, exists=True),
              help="PEM CA that signed the nodes' certificates.")
@click.pass_context
@friendly_errors
def cluster_up(ctx: click.Context, nodes: int, directory: str | None, base_port: int, rf: int,
               foreground: bool, timeout: float, secret_file: str | None,
               tls_cert_file: str | None, tls_key_file: str | None, tls_ca_file: str | None) -> None:
    """Start (or restart) a local cluster; return once every node serves."""
    root = lc.cluster_dir(directory)
    local = LocalCluster.load(root)
    explicit = ctx.get_parameter_source("nodes") != click.core.ParameterSource.DEFAULT
    tls_given = {k: v for k, v in (("cert_file", tls_cert_file), ("key_file", tls_key_file),
                                   ("ca_file", tls_ca_file)) if v}
    SecurityConfig(**{f"tls_{k}": v for k, v in tls_given.items()}).validate()  # all three or none
    if local is None:
        local = LocalCluster(root, secret_file=os.path.abspath(secret_file) if secret_file else "",
                             tls_files={k: os.path.abspath(v) for k, v in tls_given.items()})
        local.secret()  # a short or unreadable secret fails here, before any node starts
        local.tls_context()  # ... and so do TLS files that do not load
        local.plan(nodes, base_port, rf)
    else:
        _note_kept_options(ctx, local)
        local.plan(nodes if explicit else len(local.nodes), base_port, rf)
    if foreground:
        _hold_signals()
    local.up(timeout=timeout, say=say)
    click.echo(f"cluster of {len(local.nodes)} nodes serving (rf {local.rf}), state in {local.root}")
    _print_quickstart(local, directory)
    if foreground:
        _watch(local)


def _note_kept_options(ctx: click.Context, local: LocalCluster) -> None:
    """An existing cluster keeps its layout: say so when --base-port or --rf asked otherwise."""
    given = {name for name in ("base_port", "rf")
             if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    if "base_port" in given and ctx.params["base_port"] != local.nodes[0].port:
        click.echo(f"note: keeping the existing ports (n1 on {local.nodes[0].port}); "
                   f"remove {local.root} to lay the cluster out again")
    if "rf" in given and ctx.params["rf"] != local.rf:
        click.echo(f"note: keeping the existing replication factor {local.rf} (see nI/node.toml)")
    secret_file = ctx.params.get("secret_file")
    if secret_file and os.path.abspath(secret_file) != local.secret_file:
        click.echo("note: keeping the existing cluster secret setting "
                   f"({local.secret_file or 'none'}; see nI/node.toml [security])")
    if ctx.params.get("tls_cert_file") and not local.tls_files:
        click.echo("note: keeping the existing plaintext setup (see nI/node.toml [security])")


def _print_quickstart(local: LocalCluster, directory: str | None) -> None:
    first = local.nodes[0].address
    host = "" if lc.default_address() == first else f" --host {first}"
    # the script as the user can type it: `ringkv` when on PATH, else the path they ran
    exe = "ringkv" if shutil.which("ringkv") else os.path.relpath(sys.argv[0])
    if not exe.endswith("ringkv"):
        exe = f"{sys.executable} -m ringkv.cli"
    click.echo(f"  {exe} put hello world{host}\n  {exe} get hello{host}\n  {exe} status{host}")


def _hold_signals() -> None:
    """In the foreground, Ctrl-C (even if our parent ignored SIGINT) and SIGTERM stop the
    cluster; SIGHUP (terminal closed) too."""
    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


def _watch(local: LocalCluster) -> None:
    click.echo("Ctrl-C stops every node.")
    try:
        while True:
            time.sleep(0.5)
            for node, code in local.exited():
                click.echo(f"{node.node_id} exited with code {code}; see {local.log_path(node)}", err=True)
                local.forget_exited(node)
            if not any(local.is_running(n) for n in local.nodes):
                click.echo("every node has stopped; exiting")
                return
    except KeyboardInterrupt:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not orphan nodes
        click.echo("\nstopping the cluster ...")
        local.stop(say=say)


@cluster.command("down")
@dir_option
@click.option("--grace", default=10.0, show_default=True, help="Seconds between SIGTERM and SIGKILL.")
@friendly_errors
def cluster_down(directory: str | None, grace: float) -> None:
    """Stop every node the local cluster started (data is kept)."""
    local = _load_cluster(directory)
    local.stop(grace=grace, say=say)
    click.echo(f"cluster in {local.root} is down (data kept; 'ringkv cluster up' restarts it)")


@cluster.command("status")
@dir_option
@friendly_errors
def cluster_status(directory: str | None) -> None:
    """Show each local node's process, address, and whether it answers."""
    from rich.table import Table

    local = _load_cluster(directory)
    table = Table("node", "pid", "process", "serving", "address", "http", "log", box=None)
    for node in local.nodes:
        running = local.is_running(node)
        table.add_row(node.node_id, str(node.pid or "-"), "running" if running else "stopped",
                      _answers(node.address) if running else "-", node.address,
                      f"{node.host}:{node.http_port}", str(local.log_path(node)))
    make_console().print(table)


def _answers(address: str) -> str:
    try:
        lc.rpc_call(address, "ping", timeout=1.0)
        return "yes"
    except RingkvError:
        return "no"


def _load_cluster(directory: str | None) -> LocalCluster:
    root = lc.cluster_dir(directory)
    local = LocalCluster.load(root)
    if local is None:
        raise LocalClusterError(f"no local cluster in {root} (start one with 'ringkv cluster up')")
    return local


# ---------------------------------------------------------------- key-value


host_option = click.option("--host", "address", default=None,
                           help="Node to ask, host:port (default: the local cluster's first node).")


def _level(value: str | None) -> str | int | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value.upper()


def _value_arg(value: str) -> bytes:
    return sys.stdin.buffer.read() if value == "-" else os.fsencode(value)


def _context_arg(context: str | None) -> bytes | None:
    if context is None:
        return None
    text = context.strip().replace("-", "+").replace("_", "/")  # URL-safe spelling too
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise click.BadParameter("not a context printed by 'ringkv get'", param_hint="--context") from None


def show_context(context: Any) -> str:
    """A context as the CLI prints it: base64 of its opaque bytes, as the HTTP API's
    X-Ringkv-Context header carries it (either can be handed to the other)."""
    if isinstance(context, dict):
        from ringkv import versions

        context = versions.encode_context(context)
    return base64.b64encode(bytes(context or b"")).decode()


@cli.command()
@click.argument("key")
@click.argument("value")
@click.option("--context", help="Context from 'ringkv get' (resolves the siblings it saw).")
@click.option("--w", "w", help="Write level: ONE TWO THREE QUORUM ALL LOCAL_QUORUM EACH_QUORUM or a number.")
@host_option
@friendly_errors
def put(key: str, value: str, context: str | None, w: str | None, address: str | None) -> None:
    """Write VALUE under KEY ('-' reads the value from stdin)."""
    with _client(address) as client:
        client.put(os.fsencode(key), _value_arg(value), context=_context_arg(context), w=_level(w))
    click.echo("OK")


@cli.command()
@click.argument("key")
@click.option("--r", "r", help="Read level: ONE TWO THREE QUORUM ALL LOCAL_QUORUM EACH_QUORUM or a number.")
@click.option("--show-context", "with_context", is_flag=True,
              help="Also print the context (for a later put).")
@host_option
@friendly_errors
def get(key: str, r: str | None, with_context: bool, address: str | None) -> None:
    """Print the value of KEY; with concurrent versions, every sibling and the context."""
    with _client(address) as client:
        values, context = client.get(os.fsencode(key), r=_level(r))
    if not values:
        fail(f"{key}: not found", EXIT_NOT_FOUND)
    if len(values) == 1:
        sys.stdout.buffer.write(bytes(values[0]) + b"\n")
        sys.stdout.flush()
        if with_context:
            click.echo(f"context: {show_context(context)}")
        return
    token = show_context(context)
    click.echo(f"{len(values)} siblings (concurrent writes):")
    for i, value in enumerate(values, 1):
        click.echo(f"  [{i}] {bytes(value).decode(errors='backslashreplace')}")
    click.echo(f"context: {token}")
    click.echo(f"resolve with: ringkv put {key} VALUE --context {token}")


@cli.command()
@click.argument("key")
@click.option("--context", help="Context from 'ringkv get' (deletes the versions it saw).")
@click.option("--w", "w", help="Write level.")
@host_option
@friendly_errors
def delete(key: str, context: str | None, w: str | None, address: str | None) -> None:
    """Delete KEY (writes a tombstone version)."""
    with _client(address) as client:
        client.delete(os.fsencode(key), context=_context_arg(context), w=_level(w))
    click.echo("OK")


def _client(address: str | None) -> Any:
    """A connected Client for ``address`` (or the default node); unreachable -> exit 4."""
    from ringkv.client import Client
    from ringkv.errors import Unavailable

    host, port = lc.split_address(address or lc.default_address())
    client = Client([f"{host}:{port}"], secret=lc.default_secret(), ssl=lc.default_tls())
    try:
        return client.connect()
    except Unavailable as exc:  # connect fails with Unavailable only when no node answered
        client.close()
        fail(unreachable_message(exc, f"{host}:{port}"), EXIT_UNREACHABLE)
    except BaseException:
        client.close()
        raise


# ---------------------------------------------------------------- repair


@cli.command()
@host_option
@click.option("--range", "range_text", help="Only this token range, START:END (exclusive start).")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to follow the job.")
@friendly_errors
def repair(address: str | None, range_text: str | None, timeout: float) -> None:
    """Merkle anti-entropy: repair this node's ranges with their other replicas."""
    from ringkv.repair_cli import run_repair

    run_repair(address or lc.default_address(), range_text, timeout, say)


# ---------------------------------------------------------------- snapshots


@cli.command()
@host_option
@click.option("--name", help="Name of the snapshot to take (default: the UTC time).")
@click.option("--all", "every", is_flag=True, help="On every node of the ring, with one name.")
@click.option("--list", "listing", is_flag=True, help="List the snapshots instead.")
@click.option("--clear", metavar="NAME", help="Delete the snapshot NAME instead.")
@friendly_errors
def snapshot(address: str | None, name: str | None, every: bool, listing: bool,
             clear: str | None) -> None:
    """Snapshot a node's data (hard links, no copy) for backup; see docs/operations.md."""
    from ringkv.snapshot_cli import run

    if sum(map(bool, (name, listing, clear))) > 1:
        fail("use one of --name, --list, --clear", EXIT_USAGE)
    if run(address or lc.default_address(), every, name, listing, clear, say):
        sys.exit(EXIT_FAILED)


# ---------------------------------------------------------------- deterministic simulation


@cli.command()
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the run: same seed, same history.")
@click.option("--seeds", type=int, default=1, show_default=True, help="Run this many seeds, from --seed on.")
@click.option("--nodes", default=5, show_default=True, help="Nodes in the simulated cluster.")
@click.option("--duration", default="60s", show_default=True, help="Virtual time of load and faults: 90, 90s, 10m, 1h.")
@click.option("--faults", default="all", show_default=True,
              help="Comma-separated loss,dup,delay,partition,oneway,crash,power,skew; or all, none.")
@click.option("--mode", type=click.Choice(["sloppy", "strict"]), default="sloppy", show_default=True,
              help="Hints mode; strict also asserts read-your-writes.")
@click.option("--rate", default=40.0, show_default=True, help="Client ops per virtual second.")
@click.option("--clients", default=4, show_default=True, help="Concurrent clients.")
@click.option("--bug", "bugs", multiple=True, help="Switch on a deliberate bug (ringkv/sim/bugs.py).")
@click.option("--trace", is_flag=True, help="Also print every traced event.")
def simulate(**opts: Any) -> None:
    """Run the whole cluster in the deterministic simulator (docs/simulation.md)."""
    from ringkv.sim.cli import run_simulate

    sys.exit(run_simulate(**opts))


# ---------------------------------------------------------------- membership changes


@cli.command("join", params=[p for p in server.params if p.name not in ("join", "replace_id")])
@click.pass_context
def join_cmd(ctx: click.Context, **params: Any) -> None:
    """Run a new node that joins a cluster with data: 'server --join' (docs/topology.md)."""
    ctx.invoke(server, join=True, **params)


@cli.command()
@host_option
@click.option("--no-wait", is_flag=True, help="Start it and return; 'ringkv streams' follows it.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to follow it.")
@friendly_errors
def decommission(address: str | None, no_wait: bool, timeout: float) -> None:
    """The node at --host streams its ranges to their new owners, leaves the ring and exits."""
    from ringkv.topology_cli import run_decommission

    run_decommission(address or lc.default_address(), not no_wait, timeout, say)


@cli.command()
@click.argument("node_id")
@host_option
@click.option("--no-wait", is_flag=True, help="Start it and return; 'ringkv streams' follows it.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to follow it.")
@friendly_errors
def removenode(node_id: str, address: str | None, no_wait: bool, timeout: float) -> None:
    """Remove a dead node: --host re-replicates its ranges from the survivors."""
    from ringkv.topology_cli import run_removenode

    run_removenode(address or lc.default_address(), node_id, not no_wait, timeout, say)


@cli.command()
@host_option
@click.option("--wait", is_flag=True, help="Follow the operation until it ends.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to follow it.")
@friendly_errors
def streams(address: str | None, wait: bool, timeout: float) -> None:
    """Progress of the node's join, replace, decommission or removenode (like netstats)."""
    from ringkv.topology_cli import show_streams

    show_streams(address or lc.default_address(), wait, timeout, say)


# ---------------------------------------------------------------- nodetool-like views


@cli.command()
@host_option
@click.option("--json", "as_json", is_flag=True, help="Print the data as JSON.")
@friendly_errors
def status(address: str | None, as_json: bool) -> None:
    """Per node: state, address, load, tokens, owns %, host id, rack (like nodetool status),
    then whether any node refuses writes for want of disk space, and whether the nodes have
    a cluster secret and serve TLS."""
    view = ClusterView.gather(address or lc.default_address(), with_status=True)
    hints = pending_hints(view)
    if as_json:
        click.echo(json.dumps(dict(view.as_dict(), hints=hints), indent=2))
        return
    console = make_console()
    for dc in view.dcs():
        console.print(f"Datacenter: {dc}\n{'=' * (12 + len(dc))}\n"
                      "Status=Up/Down\n|/ State=Normal/Leaving/Joining/Moving")
        console.print(view.status_table(dc))
        console.print()
    for holder, pending in sorted(hints.items()):
        if pending:
            console.print(f"Hints held by {holder}: " + ", ".join(
                f"{target}={count}" for target, count in sorted(pending.items())))
    for line in (view.handover_line(), view.storage_line(), view.security_line()):
        if line:
            console.print(line)


@cli.command()
@host_option
@click.option("--all", "show_all", is_flag=True, help="List every token range, not the first 20.")
@click.option("--json", "as_json", is_flag=True, help="Print the data as JSON.")
@friendly_errors
def ring(address: str | None, show_all: bool, as_json: bool) -> None:
    """Token ownership per node, then token ranges and their replicas (like nodetool ring)."""
    view = ClusterView.gather(address or lc.default_address(), with_status=False)
    if as_json:
        click.echo(json.dumps(view.as_dict(ranges=True), indent=2))
        return
    console = make_console()
    console.print(f"{len(view.nodes)} nodes, {len(view.ring.tokens)} tokens, "
                  f"replication {view.ring.replication} (as seen by {view.source})")
    console.print(view.ownership_table())
    console.print(view.ranges_table(limit=None if show_all else 20))


def _add_bench_command() -> None:
    """``ringkv bench`` (YCSB workloads A-F) lives with its implementation."""
    from ringkv.bench.ycsb import bench_command

    cli.add_command(bench_command, name="bench")


_add_bench_command()


def main() -> None:
    """Entry point of the ``ringkv`` script."""
    cli(prog_name="ringkv")


if __name__ == "__main__":
    main()
