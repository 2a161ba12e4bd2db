"""One chaos run end to end: namespaces, nodes, workload + nemesis, heal, converge, check.

``run(RunConfig(...))`` returns the result dict whose JSON is the run's last output line;
``python -m ringkv.chaos`` is the command-line front end and tests call :func:`run`
directly. Steps:

1. build a :class:`~ringkv.chaos.netns.Topology` (a namespace per node + a client
   namespace) and start the nodes (5, N=3, short gossip intervals, hints mode as asked);
2. in the client namespace, wait until every node sees every node up, then run the
   workload on its own thread while the main thread runs the seeded nemesis schedule;
3. heal everything (routes, pauses, dead nodes); in the client namespace wait for the
   membership, run ``ringkv repair`` on every node when the CLI has it, otherwise make one
   read-repair pass (read every key at ALL), then poll until every replica of every key
   (and every range, via ``merkle_root`` when served) agrees: ``converge_s`` is the time
   from the heal to that point, bounded by ``converge_timeout_s``;
4. read every key at ALL and hand history + final reads to :mod:`ringkv.chaos.checker`.

Namespaces are removed and node processes killed in ``finally`` whatever happens; the run
directory (configs, node logs, ``history.jsonl``) is kept when the run fails or ``keep``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ringkv.chaos import checker, converge, nemesis, workload
from ringkv.chaos.netns import Topology, call_in_netns, run_in_netns
from ringkv.chaos.nodes import NodeSet
from ringkv.client import AsyncClient
from ringkv.net.transport import RpcClient


@dataclass
class RunConfig:
    seed: int = 1
    nodes: int = 5
    rf: int = 3
    duration_s: float = 40.0  # workload and nemesis time
    clients: int = 6
    rate: float = 60.0  # workload ops/s over all clients
    max_ops: int = 200_000  # bound on workload ops (reads-back not counted)
    shared_keys: int = 8  # keys per shared class (blind, rmw)
    mix: tuple[float, float, float] = (0.35, 0.25, 0.40)  # shares of unique, blind, rmw writes
    hints_mode: str = "strict"  # [hints] mode of every node: "strict" or "sloppy"
    kinds: tuple[str, ...] = nemesis.BASIC_KINDS
    membership_changes: bool = False  # join/decommission, when the store has them
    hold: tuple[float, float] = (2.0, 5.0)
    gap: tuple[float, float] = (1.0, 3.0)
    converge_timeout_s: float = 60.0  # the stated bound on convergence after healing
    read_repair_pass: str = "auto"  # "auto" (only without repair), "always", "never"
    repair: str = "auto"  # "auto": run `ringkv repair` when the CLI has it; "never": do not
    sabotage: int = 0  # checker self-test: delete this many acked unique keys before the final read
    gossip_interval_s: float = 0.2
    suspect_after_s: float = 1.0
    request_timeout_ms: int = 1000
    subnet: int = 1
    base_dir: str | None = None
    keep: bool = False
    extra_config: dict[str, dict] = field(default_factory=dict)

    def node_config(self) -> dict[str, dict]:
        cfg: dict[str, dict] = {
            "membership": {"gossip_interval_s": self.gossip_interval_s,
                           "suspect_after_s": self.suspect_after_s,
                           "probe_interval_s": max(self.gossip_interval_s * 2, 0.2)},
            "cluster": {"request_timeout_ms": self.request_timeout_ms},
            "hints": {"mode": self.hints_mode},
        }
        for section, values in self.extra_config.items():
            cfg.setdefault(section, {}).update(values)
        return cfg

    def repro(self) -> str:
        args = [f"--seed {self.seed}", f"--duration {self.duration_s:g}",
                f"--clients {self.clients}", f"--rate {self.rate:g}", f"--mode {self.hints_mode}"]
        if self.membership_changes:
            args.append("--long")
        if self.membership_changes != ("kill+partition" in self.kinds) or (
                set(self.kinds) - {"kill+partition"} != set(nemesis.BASIC_KINDS)):
            args.append("--kinds " + ",".join(self.kinds))
        if self.repair != "auto" or self.read_repair_pass != "auto":
            args.append(f"--repair {self.repair} --read-repair-pass {self.read_repair_pass}")
        if self.mix != (0.35, 0.25, 0.40):
            args.append("--mix " + ",".join(f"{x:g}" for x in self.mix))
        if self.shared_keys != 8:
            args.append(f"--shared-keys {self.shared_keys}")
        if (self.hold, self.gap) != ((2.0, 5.0), (1.0, 3.0)):
            args.append(f"--hold {self.hold[0]:g},{self.hold[1]:g} --gap {self.gap[0]:g},{self.gap[1]:g}")
        return "sudo .venv/bin/python -m ringkv.chaos " + " ".join(args)


def features() -> dict[str, bool]:
    """What the store offers right now (the other parts of issue 4 land independently)."""
    try:
        from ringkv.cli import cli

        commands = set(getattr(cli, "commands", {}))
    except Exception:  # noqa: BLE001 - a half-written cli must not stop the harness
        commands = set()
    root = Path(__file__).resolve().parent.parent
    return {"repair_cli": "repair" in commands, "join_cli": "join" in commands,
            "decommission_cli": "decommission" in commands,
            "hints": (root / "hints.py").exists(),
            "antientropy": (root / "antientropy.py").exists(),
            "streaming": (root / "streaming.py").exists()}


def run(cfg: RunConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one chaos test; the result dict (``ok`` says whether every check passed)."""
    if os.geteuid() != 0:
        raise PermissionError("chaos runs need root (network namespaces)")
    started = time.monotonic()
    base = Path(cfg.base_dir or tempfile.mkdtemp(prefix="ringkv-chaos-"))
    topo = Topology(cfg.nodes, subnet=cfg.subnet)
    nodes: NodeSet | None = None
    result: dict[str, Any] = {"ok": False, "seed": cfg.seed}
    feats = features()
    log(f"chaos: seed {cfg.seed}, {cfg.nodes} nodes, N={cfg.rf}, mode {cfg.hints_mode}, "
        f"{cfg.duration_s:g}s, dir {base}\nchaos: features {feats}\nchaos: repro: {cfg.repro()}")
    try:
        topo.create()
        nodes = NodeSet(topo, base, cfg.nodes, replication={"dc1": cfg.rf},
                        config=cfg.node_config())
        result = _run_in(cfg, topo, nodes, base, feats, log)
    except BaseException as exc:
        log(f"chaos: run failed ({type(exc).__name__}: {exc}); directory kept: {base}")
        raise
    finally:
        if nodes is not None:
            nodes.close()
        errors = topo.remove()
        if errors:
            log(f"chaos: namespace cleanup errors: {errors}")
        result["duration"] = round(time.monotonic() - started, 1)
        if result.get("ok") and not cfg.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            result["dir"] = str(base)
    return result


def _run_in(cfg: RunConfig, topo: Topology, nodes: NodeSet, base: Path, feats: dict,
            log: Callable[[str], None]) -> dict[str, Any]:
    for i in range(cfg.nodes):
        nodes.start(i)
    nodes.wait_serving(list(range(cfg.nodes)), 60)
    expected = {n.node_id for n in nodes.nodes}
    waited = call_in_netns(topo.client, lambda: asyncio.run(_members(nodes.addresses(), expected)))
    log(f"chaos: cluster up, all nodes see {sorted(expected)} ({waited:.1f}s)")

    kinds = cfg.kinds
    changes = cfg.membership_changes and feats["join_cli"] and feats["decommission_cli"]
    faults = nemesis.schedule(cfg.seed, cfg.duration_s, cfg.nodes, hold=cfg.hold, gap=cfg.gap,
                              kinds=kinds, membership_changes=changes)
    if cfg.membership_changes and not changes:
        log("chaos: join/decommission not available yet: schedule without them")
    log("chaos: nemesis schedule (seeded):")
    for f in faults:
        log(f"  at {f.at:6.2f}s  {f.describe()}")

    stop = threading.Event()
    spec = workload.WorkloadSpec(nodes.addresses(), seed=cfg.seed, clients=cfg.clients,
                                 duration_s=cfg.duration_s, max_ops=cfg.max_ops, rate=cfg.rate,
                                 shared_keys=cfg.shared_keys, mix=cfg.mix, stop=stop)
    wthread = run_in_netns(topo.client, lambda: asyncio.run(workload.run(spec)))
    nem = nemesis.Nemesis(nodes, topo, log=log)
    if changes:
        nem.hooks = _membership_hooks(cfg, topo, nodes, nem)
    try:
        nem.run(faults, stop=lambda: not wthread.is_alive())
    except BaseException:
        stop.set()  # end the workload early; its history is still judged below
        raise
    finally:
        history = wthread.outcome(timeout=cfg.duration_s + 60)
        nem.heal_all()
    healed = time.monotonic()
    _save(base / "history.jsonl", history)
    log(f"chaos: workload done: {len(history)} ops; everything healed; converging")

    live = [n for n in nodes.nodes if n.index not in nem.retired]
    expected = {n.node_id for n in live}
    doomed = sorted(op["key"] for op in history
                    if op["kind"] == "unique" and op["status"] == "ok")[:cfg.sabotage]
    post = call_in_netns(topo.client, lambda: asyncio.run(
        _after(cfg, [n.address for n in live], expected, checker.keys_of(history), feats,
               healed, log, doomed)))
    ryw = cfg.hints_mode == "strict"  # QUORUM + QUORUM > N: read-your-writes must hold
    report = checker.check(history, post.pop("final"), ryw_enforced=ryw)
    done = [f for f in nem.done if f.error is None]
    result = {"ok": report.ok and post["converged"], "seed": cfg.seed, "mode": cfg.hints_mode,
              "ops": report.ops, "acked_writes": report.acked_writes,
              "lost_writes": report.lost_writes, "faults": len(done),
              "converge_s": post["converge_s"], **report.summary(), **post,
              "fault_kinds": sorted({f.kind for f in done}),
              "notes": [f"{f.at}s {f.describe()}: {f.note}" for f in nem.done
                        if f.note and not f.note.startswith("retargeted")],
              "repro": cfg.repro()}
    _print_report(result, report, nem.done, log)
    return result


def _membership_hooks(cfg: RunConfig, topo: Topology, nodes: NodeSet,
                      nem: nemesis.Nemesis) -> dict[str, Callable[[nemesis.Fault], None]]:
    """``join``: a new node (its own new host) runs ``ringkv join``; ``decommission``: a
    seeded non-seed node is decommissioned with ``ringkv decommission`` (from the client
    namespace) and stays stopped."""

    def join(f: nemesis.Fault) -> None:
        node = nodes.add()
        nodes.write_config(node)
        f.nodes = [node.index]
        nodes.start(node.index, [sys.executable, "-m", "ringkv.cli", "join",
                                 "--config", str(node.config_path)])
        nodes.wait_serving([node.index], 60)

    def decommission(f: nemesis.Fault) -> None:
        rng = random.Random(f"{cfg.seed}/decommission/{len(nem.retired)}")
        i = rng.choice([n.index for n in nodes.nodes[2:]
                        if n.index not in nem.retired and n.running])
        f.nodes = [i]
        node = nodes.nodes[i]
        cmd = ["ip", "netns", "exec", topo.client, sys.executable, "-m", "ringkv.cli",
               "decommission", "--host", node.address, "--timeout", "120"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
        left = _left(node)
        if res.returncode != 0 and not left:
            raise RuntimeError(f"decommission n{i + 1} exited {res.returncode}: "
                               f"{(res.stderr or res.stdout).strip()[-300:]}")
        if res.returncode != 0:  # the node left, but the CLI lost it while following
            nem.log(f"[nemesis] NOTE: `ringkv decommission` exited {res.returncode} although "
                    f"n{i + 1} finished leaving: {(res.stderr or res.stdout).strip()[-200:]}")
            f.note = f"CLI exit {res.returncode} after a completed decommission"
        nem.retired.add(i)

    return {"join": join, "decommission": decommission}


def _left(node, wait_s: float = 30.0) -> bool:
    """Whether a decommissioned node finished leaving: its log says so and it exited."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        done = f"decommission of {node.node_id} done" in node.log_tail(200)
        if done and not node.running:
            return True
        time.sleep(0.2)
    return False


async def _members(addresses: list[str], expected: set[str], timeout: float = 60.0) -> float:
    rpc = RpcClient(connect_timeout=2.0)
    try:
        return await converge.wait_members(rpc, addresses, expected, timeout)
    finally:
        await rpc.close()


async def _after(cfg: RunConfig, addresses: list[str], expected: set[str], keys: list[str],
                 feats: dict, healed: float, log: Callable[[str], None],
                 doomed: list[str]) -> dict[str, Any]:
    """In the client namespace: membership, repair, convergence, final read."""
    rpc = RpcClient(connect_timeout=2.0)
    client = AsyncClient(addresses, timeout=3.0, retries=2, refresh_interval=2.0)
    try:
        await converge.wait_members(rpc, addresses, expected, cfg.converge_timeout_s)
        use = feats["repair_cli"] and cfg.repair == "auto"
        repaired = _repair(addresses, log) if use else None
        rr = cfg.read_repair_pass == "always" or (
            cfg.read_repair_pass == "auto" and not repaired)
        if rr:
            await converge.read_all(client, keys)
        conv = await converge.wait_converged(rpc, addresses[0], keys,
                                             cfg.converge_timeout_s, log=log)
        converge_s = round(time.monotonic() - healed, 2)
        for key in doomed:  # sabotage (checker self-test): the checker must report these
            log(f"chaos: SABOTAGE: deleting acknowledged key {key} behind the checker's back")
            await client.delete(key, w="ALL")
        final = await converge.read_all(client, keys)
        return {"final": final, "converged": conv["converged"], "converge_s": converge_s,
                "converge_bound_s": cfg.converge_timeout_s, "divergent_keys": conv["divergent_keys"],
                "divergent_ranges": conv["divergent_ranges"], "merkle_checked": conv["merkle"],
                "repair": "ringkv repair" if repaired else (
                    "read-repair pass" if rr else "none"), "keys": len(keys)}
    finally:
        await client.close()
        await rpc.close()


def _repair(addresses: list[str], log: Callable[[str], None]) -> bool:
    """``ringkv repair`` against every node (run from the client namespace)."""
    ok = True
    for address in addresses:
        cmd = [sys.executable, "-m", "ringkv.cli", "repair", "--host", address]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            log(f"chaos: repair of {address} timed out")
            ok = False
            continue
        if res.returncode != 0:
            log(f"chaos: repair of {address} failed ({res.returncode}): "
                f"{(res.stderr or res.stdout).strip()[-300:]}")
            ok = False
    return ok


def _save(path: Path, history: list[dict]) -> None:
    with open(path, "w") as f:
        for op in history:
            f.write(json.dumps(op) + "\n")


def _print_report(result: dict, report: checker.Report, faults: list, log) -> None:
    log("chaos: operations by kind:status: " + ", ".join(
        f"{k}={v}" for k, v in report.summary()["statuses"].items()))
    log(f"chaos: acknowledged writes {report.acked_writes} (of {report.writes}; "
        f"{report.unacked_present} unacknowledged ones were applied anyway)")
    log(f"chaos: lost writes {report.lost_writes}")
    for w in report.lost[:20]:
        log(f"  LOST {json.dumps(w)[:400]}")
    for w in report.unverified[:5]:
        log(f"  UNVERIFIED (final read failed) {w['key']} {w['value']}")
    log(f"chaos: read-your-writes checks {report.ryw_checks}, missed {len(report.ryw_missed)}"
        f" ({'enforced' if report.ryw_enforced else 'counted only'})")
    for op in report.ryw_missed[:5]:
        log(f"  RYW MISS {json.dumps(op)[:300]}")
    log(f"chaos: faults injected {result['faults']}: " + "; ".join(
        f"{f.injected_at}s {f.describe()}" + (f" [failed: {f.error}]" if f.error else "")
        for f in faults))
    for note in result["notes"]:
        log(f"chaos: NOTE {note}")
    log(f"chaos: converged={result['converged']} in {result['converge_s']}s after healing "
        f"(bound {result['converge_bound_s']}s; {result['repair']}; merkle "
        f"{'checked' if result['merkle_checked'] else 'not served: replica_get of every key'})")


def result_line(result: dict) -> str:
    """The one JSON line a run ends with."""
    keys = ("ok", "seed", "mode", "duration", "ops", "acked_writes", "lost_writes", "faults",
            "converge_s", "converged", "converge_bound_s", "keys", "unacked_writes",
            "unacked_present", "unverified_writes", "ryw_checks", "ryw_missed", "ryw_enforced",
            "divergent_keys", "divergent_ranges", "merkle_checked", "repair", "fault_kinds",
            "notes", "dir", "repro")
    return json.dumps({k: result[k] for k in keys if k in result})


__all__ = ["RunConfig", "run", "features", "result_line"]
