"""Run one ringkv node in the foreground: ``serve(config)`` blocks until SIGTERM/SIGINT.

Starts the node (engine, RPC, gossip) and its HTTP API on uvloop, logs to stderr, prints
``ringkv node <id> serving on <host>:<port> (http :<http_port>)`` on stdout once both
listen (``ringkv cluster up`` and ``ringkv.testing.cluster`` wait for that line), and on
a signal stops listening and closes the engine before returning. A second signal during
shutdown is ignored; shutdown itself is bounded by ``SHUTDOWN_TIMEOUT``.

``python -m ringkv.server --config node.toml`` does the same without the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from typing import Any

from ringkv.config import LimitsConfig, RingkvConfig
from ringkv.errors import Closed, RingkvError

log = logging.getLogger("ringkv.server")
SHUTDOWN_TIMEOUT = 20.0  # seconds allowed for closing HTTP, RPC and the engine
LOW_OPEN_FILES = 4096  # an open-files limit under this is logged as a warning
FILES_RESERVE = 512  # descriptors kept for the node's own files when fitting max_connections
MIN_CONNECTIONS = 64  # max_connections is never lowered below this (a tiny limit warns anyway)
PORTS = 3  # RPC, HTTP and RESP each hold up to max_connections


def serve(config: RingkvConfig) -> None:
    """Run a node until SIGTERM or SIGINT. Raises ConfigError for a bad config."""
    import uvloop

    config.validate()
    _setup_logging()
    _tune_gc(config.node.gc_young_threshold)
    config = fit_connections(config, raise_open_files_limit())
    uvloop.run(_run(config))


def fit_connections(config: RingkvConfig, open_files: int) -> RingkvConfig:
    """``config`` with ``limits.max_connections`` lowered so that full RPC, HTTP and RESP
    ports still leave ``FILES_RESERVE`` descriptors for the node's own files
    (SSTables, commit-log segments, hint segments), as Redis lowers ``maxclients``.
    Why: past the open-files limit a node cannot open its next table, and every port
    would refuse connections without saying why."""
    import dataclasses
    import resource

    wanted = config.limits.max_connections
    if open_files == resource.RLIM_INFINITY:
        return config
    fits = max(MIN_CONNECTIONS, (open_files - FILES_RESERVE) // PORTS)
    if wanted <= fits:
        return config
    # the default lowered is routine (a hard limit of 20,000 gives 6,496); a value the
    # operator chose lowered is worth a warning
    level = logging.INFO if wanted == LimitsConfig.max_connections else logging.WARNING
    log.log(level, "limits.max_connections lowered from %d to %d per port to fit the open "
            "files limit of %d (raise it: ulimit -Hn, systemd LimitNOFILE)", wanted, fits,
            open_files)
    return dataclasses.replace(config, limits=dataclasses.replace(config.limits,
                                                                   max_connections=fits))


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; the limit now.

    Why: every client and peer connection, SSTable and commit-log segment is a file
    descriptor, and many systems start processes at a soft limit of 1024. Past it a node
    cannot accept connections, and a flush that cannot open its new table fails; the
    hard limit is what the administrator allows (``ulimit -Hn``, systemd's
    ``LimitNOFILE``), so a server takes it, as databases commonly do."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20  # Linux's default fs.nr_open
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            log.info("open files limit raised from %d to %d", soft, hard)
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)
    if soft != resource.RLIM_INFINITY and soft < LOW_OPEN_FILES:
        log.warning("open files limit is %d: each connection, SSTable and commit-log segment "
                    "takes one; raise the hard limit (ulimit -Hn, systemd LimitNOFILE) to at "
                    "least %d", soft, LOW_OPEN_FILES)
    return soft


def _tune_gc(young_threshold: int) -> None:
    """Collect the young generation every ``young_threshold`` allocations instead of 700.

    Why (docs/decisions.md D29): a node holds a few very big containers (memtable dicts,
    the block cache, SSTable index lists). Python starts a full collection by counting
    objects, and such a container is one object, so at 700 full collections came often,
    each walking every entry (~45 ms): with the young ones ~9% of a loaded node's main
    thread. The older generations keep Python's ratios, so cycles are still collected,
    in larger and rarer steps."""
    if young_threshold:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, older, oldest)


async def _run(config: RingkvConfig) -> None:
    from ringkv.http import start_http
    from ringkv.node import Node

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    node = Node(config)
    await node.start()
    http = resp = None
    try:
        try:
            http = await start_http(node, config.node.host, config.node.effective_http_port(),
                                    node.tls_server, config.limits.max_connections)
        except OSError as exc:
            raise Closed(f"cannot listen for HTTP on {config.node.host}:"
                         f"{config.node.effective_http_port()}: {exc.strerror or exc}") from None
        resp = await _start_resp(node, config)
        assert node.server is not None
        extra = f" (resp :{resp.port})" if resp is not None else ""
        tls = " with TLS" if node.tls_server is not None else ""
        print(f"ringkv node {node.node_id} serving on {config.node.host}:{node.server.port} "
              f"(http :{config.node.effective_http_port()}){extra}{tls}", flush=True)
        log.info("node %s up: dc %s, %d tokens, seeds %s", node.node_id, node.dc,
                 len(node.ident.tokens) if node.ident else 0, ", ".join(config.node.seeds) or "none")
        stopping = asyncio.ensure_future(stop.wait())
        failing = asyncio.ensure_future(node.fatal.wait())
        await asyncio.wait((stopping, failing), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        failing.cancel()
        log.info("node %s shutting down", node.node_id)
    finally:
        try:
            await asyncio.wait_for(_shutdown(node, http, resp), SHUTDOWN_TIMEOUT)
        except asyncio.TimeoutError:
            log.error("shutdown took longer than %.0fs; exiting anyway", SHUTDOWN_TIMEOUT)
    log.info("node %s stopped", node.node_id)
    if node.fatal_error is not None:  # e.g. another node runs with this identity (D38)
        raise node.fatal_error


async def _start_resp(node: Any, config: RingkvConfig) -> Any:
    """Serve RESP on ``node.effective_resp_port()`` unless it is switched off (-1)."""
    port = config.node.effective_resp_port()
    if not port:
        return None
    from ringkv.resp_server import RespServer

    server = RespServer(node, config.node.host, port, config.limits, info=node.status,
                        ssl=node.tls_server, max_connections=config.limits.max_connections,
                        password=node.secret)
    try:
        await server.start()
    except OSError as exc:
        raise Closed(f"cannot listen for RESP on {config.node.host}:{port}: "
                     f"{exc.strerror or exc}") from None
    node.resp_port = server.port
    return server


async def _shutdown(node: Any, http: Any, resp: Any) -> None:
    if resp is not None:
        await resp.stop()
    if http is not None:
        await http.cleanup()
    await node.close()


def _setup_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ringkv.server", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="TOML config file")
    args = parser.parse_args(argv)
    try:
        serve(RingkvConfig.load(args.config))
    except KeyboardInterrupt:
        pass
    except RingkvError as exc:
        print(f"ringkv server: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

__all__ = ["serve", "main"]
