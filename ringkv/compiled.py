"""Which modules are compiled with Cython, and which build of each this process loads.

The modules in ``COMPILED`` are ordinary Python source. ``setup.py`` also compiles them
with Cython into extension modules beside the source (docs/decisions.md D21): the same
code, about a fifth less CPU per request. Python would load an extension in preference
to its source, so this module guards the choice:

* ``RINGKV_PURE_PYTHON=1`` in the environment loads the source of every module (to
  compare, or to debug with a pure-Python traceback);
* an extension older than its source (the source was edited after the last build) is
  never loaded: the source is, and ``status()`` says so. A stale build can therefore
  never run code that differs from the source in the tree.

Invariant: ``install()`` runs in ``ringkv/__init__.py``, before any listed module is
imported. This file must stay importable without the package (``setup.py`` reads
``COMPILED`` with runpy) and must not itself be compiled.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

#: Modules on the request, storage and simulation paths, compiled when a C compiler is
#: available. Not here: entry points run with ``python -m`` (Cython modules cannot be
#: ``__main__``) and code that is not on a hot path.
COMPILED: tuple[str, ...] = (
    "ringkv.client",
    "ringkv.coordinator",
    "ringkv.deadlines",
    "ringkv.handoff",
    "ringkv.hint_store",
    "ringkv.hints",
    "ringkv.membership",
    "ringkv.metrics",
    "ringkv.moved_writes",
    "ringkv.node",
    "ringkv.node_gossip",
    "ringkv.node_ops",
    "ringkv.node_replica",
    "ringkv.resp_commands",
    "ringkv.resp_server",
    "ringkv.ring",
    "ringkv.streaming",
    "ringkv.versions",
    "ringkv.write_tracker",
    "ringkv.net.frames",
    "ringkv.net.resp",
    "ringkv.net.resp_fast",
    "ringkv.net.transport",
    "ringkv.storage.block_cache",
    "ringkv.storage.bloom",
    "ringkv.storage.commitlog_format",
    "ringkv.storage.commitlog_writer",
    "ringkv.storage.compaction",
    "ringkv.storage.engine",
    "ringkv.storage.entry",
    "ringkv.storage.fs",
    "ringkv.storage.memtable",
    "ringkv.storage.sstable_format",
    "ringkv.storage.sstable_reader",
    "ringkv.storage.sstable_writer",
)

#: Modules that exist only as extensions (Cython ``.pyx`` beside no ``.py``): code that needs
#: C without the GIL. Each has a Python fallback where it is used; ``load_native`` returns
#: None (so the caller takes it) when the module is not built, is older than its ``.pyx``,
#: or ``RINGKV_PURE_PYTHON`` asks for source.
NATIVE: tuple[str, ...] = (
    "ringkv.storage.fsync_thread",
)

PURE_ENV = "RINGKV_PURE_PYTHON"
_ROOT = Path(__file__).resolve().parent.parent
_status: dict[str, str] = {}


def source_path(name: str) -> Path:
    """The source of a listed module: its ``.py`` file (``.pyx`` for one in NATIVE)."""
    return _ROOT.joinpath(*name.split(".")).with_suffix(".pyx" if name in NATIVE else ".py")


def extension_path(name: str) -> Path | None:
    """The built extension of a listed module, or None when there is none."""
    src = source_path(name)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = src.with_name(src.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def decide(source: Path, extension: Path | None, pure: bool) -> str:
    """"compiled" when ``extension`` should load in place of ``source``, else "source (why)"."""
    if extension is None:
        return "source (not built)"
    if pure:
        return f"source ({PURE_ENV}=1)"
    if source.exists() and extension.stat().st_mtime < source.stat().st_mtime:
        return "source (build older than source: run `make install`)"
    return "compiled"


class _SourceFirst:
    """A meta-path finder that loads the source of listed modules not to run compiled."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if fullname not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def wants_source(name: str) -> bool:
    """True when ``RINGKV_PURE_PYTHON`` asks for the source of ``name``: "1" for every
    module, or a comma-separated list of module names (to find which one matters)."""
    value = os.environ.get(PURE_ENV, "")
    if value in ("", "0"):
        return False
    return value == "1" or name in {v.strip() for v in value.split(",")}


def install() -> None:
    """Decide, once per process, which build of each listed module loads."""
    if _status:
        return
    for name in COMPILED + NATIVE:
        _status[name] = decide(source_path(name), extension_path(name), wants_source(name))
    from_source = {n for n, s in _status.items()
                   if s != "compiled" and extension_path(n) and n not in NATIVE}
    if from_source:
        sys.meta_path.insert(0, _SourceFirst(from_source))


def status() -> dict[str, str]:
    """Module name -> "compiled" or "source (why)", as decided by ``install()``."""
    install()
    return dict(_status)


def load_native(name: str) -> Any:
    """The extension module ``name`` (one of NATIVE) if it is to run, else None."""
    if status().get(name) != "compiled":
        return None
    return importlib.import_module(name)


def all_compiled() -> bool:
    """True when every listed module runs compiled."""
    return all(s == "compiled" for s in status().values())
