"""Deliberate-bug switches: broken behaviour the simulator must catch (issue 6).

Production code checks ``bugs.ACTIVE and "name" in bugs.ACTIVE`` at the exact spot of
each bug: with nothing switched on that is one attribute load and a falsy test, so the
switches cost nothing in production. Only the simulator's tests and ``ringkv simulate
--bug NAME`` switch them on, always through :func:`enabled` (which restores the set).

- ``hint_replay_dropped``: hinted handoff deletes a target's hint segment without
  sending its hints (ringkv/handoff.py); caught by the convergence check.
- ``stale_read_repair``: read repair writes a stale replica's siblings under the merged
  causal context (ringkv/node_ops.py), which supersedes newer siblings everywhere;
  caught as lost writes.
- ``ack_before_fsync``: the engine acknowledges ``aput`` before the group-commit fsync
  covering it (ringkv/storage/engine.py), so W counts acks that a crash may undo;
  caught as lost writes after a power loss.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

KNOWN = ("hint_replay_dropped", "stale_read_repair", "ack_before_fsync")

ACTIVE: frozenset[str] = frozenset()


@contextlib.contextmanager
def enabled(*names: str) -> Iterator[None]:
    """Switch the named bugs on for the duration of the block."""
    global ACTIVE
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise ValueError(f"unknown bug switch {unknown[0]!r}; known: {', '.join(KNOWN)}")
    saved, ACTIVE = ACTIVE, ACTIVE | frozenset(names)
    try:
        yield
    finally:
        ACTIVE = saved


def stale_repair(replies: dict[str, Any], merged: bytes) -> bytes:
    """The ``stale_read_repair`` payload: the oldest reply's siblings under the merged vv."""
    from ringkv import versions

    stale = [vs for _node, vs in sorted(replies.items()) if vs is not None and vs != merged]
    if not stale:
        return merged
    old = versions.decode(stale[0])
    new = versions.decode(merged)
    return versions.encode(versions.VersionSet(dict(new.vv), old.siblings))


__all__ = ["ACTIVE", "KNOWN", "enabled", "stale_repair"]
