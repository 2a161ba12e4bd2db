"""What a simulated run is judged by, after the faults are healed.

1. **Convergence** (:func:`divergent_keys`): every home replica of every written key
   holds the same version set, read straight from the replicas' engines. Checked twice:
   after a settle period in which only hinted handoff (and gossip) can repair replicas,
   asserted only when no node crashed (a coordinator that dies before its hint is stored
   leaves a gap that only anti-entropy closes); and again after a full anti-entropy
   repair, asserted always.
2. **No acknowledged write lost; read-your-writes** (strict mode): the chaos checker,
   :func:`ringkv.chaos.checker.check`, over the workload history and a final read of every
   key at level ALL (:func:`final_reads`).

The simulator is omniscient where a real client is not: :func:`record_mints` notes the
version vector every coordinator minted for each value. A write the client saw fail (its
coordinator crashed, say) may still have been applied and, being blind, supersede acked
writes; the chaos checker has no context for it and would call those writes lost. So
:func:`judge_history` re-checks with each unacknowledged write's minted context as its
evidence, and only acknowledged writes still unaccounted for count as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any, Iterator

from ringkv import versions
from ringkv.chaos import checker as chaos_checker
from ringkv.chaos.checker import Final, keys_of
from ringkv.errors import RingkvError
from ringkv.ring import token_for
from ringkv.sim.cluster import SimCluster
from ringkv.sim.network import SimRpcClient


def _contents(node: Any) -> dict[bytes, bytes]:
    """Everything a node's engine holds (one merged scan: cheaper than a get per key)."""
    return dict(node.engine.scan())


def divergent_keys(cluster: SimCluster, keys: list[str]) -> list[dict]:
    """Keys whose live home replicas hold different version sets (engines read directly)."""
    held_by = {s.name: _contents(s.node) for s in cluster.nodes if s.up and s.node is not None}
    ring = next(s.node.ring for s in cluster.nodes if s.up and s.node is not None and not s.retired)
    out = []
    for key in keys:
        token = token_for(key.encode())
        skey = token.to_bytes(8, "big") + key.encode()
        held = {r: held_by[r].get(skey) for r in ring.replicas(token) if r in held_by}
        if len(set(held.values())) > 1:
            out.append({"key": key, "replicas": {r: _show(v) for r, v in sorted(held.items())}})
    return out


def _show(raw: bytes | None) -> list[str]:
    if raw is None:
        return []
    return sorted(v.decode(errors="replace") for v in versions.values(versions.decode(raw)))


Mint = tuple[str, int, dict[str, int]]  # the new sibling's dot (node, counter) and the set's vv


@contextlib.contextmanager
def record_mints() -> Iterator[dict[str, list[Mint]]]:
    """Within the block, map each written value to every version minted for it (a
    duplicated forwarded put is minted twice, with two dots)."""
    mints: dict[str, list[Mint]] = {}
    original = versions.update

    def update(local: Any, context: Any, node_id: str, value: bytes | None, timestamp: float,
               *more: Any, **kw: Any) -> Any:
        new = original(local, context, node_id, value, timestamp, *more, **kw)
        if value is not None:
            mints.setdefault(value.decode(errors="replace"), []).append(
                (node_id, new[0][node_id], dict(new[0])))
        return new
    versions.update = update  # type: ignore[assignment]
    try:
        yield mints
    finally:
        versions.update = original  # type: ignore[assignment]


def surviving_dots(cluster: SimCluster, keys: list[str]) -> dict[tuple[str, str], tuple[str, int]]:
    """(key, value) -> dot of the sibling holding it in the join of the live replicas."""
    held_by = [_contents(s.node) for s in cluster.nodes
               if s.up and s.node is not None and s.node.engine]
    out: dict[tuple[str, str], tuple[str, int]] = {}
    for key in keys:
        skey = token_for(key.encode()).to_bytes(8, "big") + key.encode()
        joined = versions.EMPTY
        for held in held_by:
            raw = held.get(skey)
            if raw is not None:
                joined = versions.join(joined, versions.decode(raw))
        for sib in joined.siblings:
            if sib.value is not None:
                out[(key, sib.value.decode(errors="replace"))] = (sib.node, sib.counter)
    return out


def judge_history(history: list[dict], finals: dict[str, Final], mints: dict[str, list[Mint]],
                  survivors: dict[tuple[str, str], tuple[str, int]], ryw_enforced: bool) -> Any:
    """The chaos checker's report, re-judged with what only the simulator knows.

    A write's evidence (the context its version carried) becomes the vv of its version that
    survives in the final state, if one does (a duplicated put is minted twice and the
    second may supersede writes the first did not see), else for an unacknowledged write
    the vv of its first mint (it may have been applied and have superseded others)."""
    report = chaos_checker.check(history, finals, ryw_enforced=ryw_enforced)
    if not report.lost:
        return report
    augmented = []
    for op in history:
        minted = mints.get(op["value"]) if op["kind"] in chaos_checker.WRITE_KINDS else None
        if minted:
            dot = survivors.get((op["key"], op["value"]))
            alive = [vv for node, counter, vv in minted if (node, counter) == dot]
            if alive:
                op = dict(op, status="ok", ctx_out=versions.encode_context(alive[0]).hex())
            elif op["status"] != "ok":
                op = dict(op, status="ok", ctx_out=versions.encode_context(minted[0][2]).hex())
        augmented.append(op)
    again = chaos_checker.check(augmented, finals, ryw_enforced=ryw_enforced)
    acked = {(op["key"], op["value"]) for op in history
             if op["kind"] in chaos_checker.WRITE_KINDS and op["status"] == "ok"}
    report.lost = [w for w in again.lost if (w["key"], w["value"]) in acked]
    return report


async def final_reads(cluster: SimCluster, keys: list[str], rng: random.Random,
                      attempts: int = 5) -> dict[str, Final]:
    """Read every key at ALL (retrying a failed read on other coordinators)."""
    client = SimRpcClient(cluster.net, "checker")
    addrs = cluster.addresses()
    out: dict[str, Final] = {}
    for key in keys:
        out[key] = Final(None)
        for _ in range(attempts):
            host, port = addrs[rng.randrange(len(addrs))]
            try:
                reply = await client.call(host, port, "get", {"key": key.encode(), "r": "ALL"}, 5.0)
            except RingkvError:
                await asyncio.sleep(1.0)
                continue
            out[key] = Final(sorted(v.decode() for v in reply["values"]), reply["context"].hex())
            break
    return out


async def repair_all(cluster: SimCluster, timeout: float = 300.0) -> bool:
    """Run anti-entropy on every live node, one after another; False if one failed."""
    ok = True
    for s in cluster.live():
        node: Any = s.node
        repairer = getattr(node, "repairer", None)
        if repairer is None or not hasattr(repairer, "begin"):
            return False
        job = s.inc.context.run(repairer.begin, None)  # its tasks belong to the node
        loop = cluster.loop
        deadline = loop.time() + timeout
        while job.state == "running" and loop.time() < deadline:
            await asyncio.sleep(0.5)
        ok = ok and job.state == "done"
    return ok


__all__ = ["divergent_keys", "final_reads", "repair_all", "keys_of", "record_mints",
           "judge_history", "surviving_dots"]
