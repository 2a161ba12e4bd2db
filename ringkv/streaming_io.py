"""Files and scans of range streaming (ringkv/topology.py): the persisted progress
(``data_dir/streaming.json``, written atomically) and one page of a token range.

Invariant: the progress file is replaced atomically (temp file, fsync, rename, fsync of
the directory), so a crash leaves the old or the new state, never a torn one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ringkv import streaming as st
from ringkv.atomic_write import write_atomic
from ringkv.errors import ConfigError


def load_progress(path: Path) -> st.Progress | None:
    """The progress stored at ``path``; None if there is none; ConfigError if damaged."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError("node.data_dir", f"cannot read {path}: {exc}") from None
    try:
        return st.Progress.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError("node.data_dir", f"{path} is damaged: {exc}") from None


def save_progress(path: Path, text: str) -> None:
    """Store ``text`` (a JSON-encoded ``Progress.to_dict()``) atomically."""
    write_atomic(path, text)


def scan_page(engine: Any, start: int, end: int, after: bytes | None,
              limit: int) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """One page of range ``(start, end]`` after ``after``: at most about ``limit`` bytes."""
    items: list[tuple[bytes, bytes]] = []
    size = 0
    for lo, hi in st.resume_bounds(start, end, after):
        it = engine.scan(lo, hi)
        try:
            for k, v in it:
                items.append((k, v))
                size += len(k) + len(v)
                if size >= limit:
                    return items, k
        finally:
            it.close()
    return items, None


__all__ = ["load_progress", "save_progress", "scan_page", "write_atomic"]
