"""A node's incarnation: how many times it has started on this data directory.

Stored in ``data_dir/incarnation`` (one decimal integer). :func:`begin` reads it, writes
the next value durably (temp file, fsync, rename, fsync of the directory) and returns the
one read, so each start of the node gets a number no earlier start had.

Why (docs/decisions.md, D19): the coordinator mints a key's next dot from its local copy
of the key. If a crash lost that copy before it was durable (commit log in ``periodic`` or
``off`` mode), a restarted node would mint the same dot again for another value, and
replicas that kept the first write would take the two for one. Dots minted in incarnation
``i`` start above ``dot_floor(i) = i << FLOOR_SHIFT``, so they can never repeat a dot of
an earlier incarnation (that would take 2**32 writes to one key in one incarnation).
The first start is incarnation 0, whose floor is 0: a node that never restarts mints
1, 2, 3, ... exactly as before.

Later starts also take at least the seconds since 2025 by the node's clock
(:func:`clock_incarnation`), so a data directory wound back (restored from a snapshot or
a backup, docs/operations.md) still starts above every incarnation its lost original
had, unless that one restarted more than once a second for longer than the backup is
old (or the clock was set back).
"""

from __future__ import annotations

from pathlib import Path

from ringkv.atomic_write import write_atomic
from ringkv.errors import ConfigError

FILE_NAME = "incarnation"
FLOOR_SHIFT = 32  # 2**32 dots per key per incarnation; 2**31 incarnations (68 years of seconds)
MAX_INCARNATION = (1 << (63 - FLOOR_SHIFT)) - 1  # keeps every floor below versions.MAX_COUNTER
CLOCK_EPOCH = 1735689600.0  # 2025-01-01T00:00:00Z: clock_incarnation counts seconds from it


def clock_incarnation(now: float) -> int:
    """The least incarnation a restart at wall-clock time ``now`` takes: whole seconds
    since CLOCK_EPOCH (0 before it)."""
    return max(0, int(now - CLOCK_EPOCH))


def begin(data_dir: str | Path, now: float | None = None) -> int:
    """This start's incarnation number; the next start will get a larger one. With
    ``now`` (the node clock's wall time), a start on a directory that was started before
    takes at least :func:`clock_incarnation` of it."""
    path = Path(data_dir) / FILE_NAME
    current = read(path)
    if now is not None and path.exists():
        current = max(current, clock_incarnation(now))
    if current >= MAX_INCARNATION:
        raise ConfigError("node.data_dir", f"{path}: incarnation {current} is the last one")
    write_atomic(path, f"{current + 1}\n")
    return current


def read(path: Path) -> int:
    """The stored number (0 if the file does not exist yet); ConfigError if damaged."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise ConfigError("node.data_dir", f"cannot read {path}: {exc}") from None
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError("node.data_dir", f"{path} is damaged: {text[:40]!r}") from None
    if value < 0:
        raise ConfigError("node.data_dir", f"{path} is damaged: {value}")
    return value


def dot_floor(incarnation: int) -> int:
    """Every dot minted in ``incarnation`` is above this."""
    return incarnation << FLOOR_SHIFT


__all__ = ["begin", "read", "dot_floor", "clock_incarnation", "FILE_NAME", "FLOOR_SHIFT"]
