"""The pure modules do no IO: an AST check (DESIGN.md decision 1).

Fails if ring, versions, coordinator or membership imports asyncio, socket, time, os,
threading or subprocess, or calls a module-level ``random`` function (``random.Random(seed)``
is fine: randomness must come from a seeded generator passed in). A module that does not
exist yet is skipped; every one that exists is checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_MODULES = ["ringkv/ring.py", "ringkv/versions.py", "ringkv/coordinator.py",
                "ringkv/membership.py", "ringkv/membership_record.py", "ringkv/hints.py",
                "ringkv/merkle.py", "ringkv/antientropy.py", "ringkv/merkle_cache.py",
                "ringkv/write_tracker.py", "ringkv/streaming.py",
                "ringkv/net/resp.py", "ringkv/net/frames.py", "ringkv/bench/generators.py"]
FORBIDDEN = {"asyncio", "socket", "time", "os", "threading", "subprocess"}
RANDOM_ALLOWED = {"Random"}  # attributes of the random module a pure module may use


def violations(source: str) -> list[str]:
    """Every forbidden import or module-level random use in ``source``, as 'line: what'."""
    tree = ast.parse(source)
    found: list[str] = []
    random_names: set[str] = set()  # names bound to the random module itself
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                _check_module(alias.name, node.lineno, found)
                if alias.name == "random":
                    random_names.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            _check_module(node.module, node.lineno, found)
            if node.module == "random":
                found += [f"{node.lineno}: from random import {a.name}"
                          for a in node.names if a.name not in RANDOM_ALLOWED]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in random_names and node.attr not in RANDOM_ALLOWED):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def _check_module(name: str, lineno: int, found: list[str]) -> None:
    if name.split(".")[0] in FORBIDDEN:
        found.append(f"{lineno}: imports {name}")


@pytest.mark.parametrize("relpath", PURE_MODULES)
def test_pure_module_does_no_io(relpath):
    path = ROOT / relpath
    assert violations(path.read_text()) == [], f"{relpath} is not pure"


@pytest.mark.parametrize("source", [
    "import os", "import os.path", "from os import path", "import time as t",
    "from asyncio import sleep", "import socket", "import threading", "import subprocess",
    "import random\nx = random.random()", "import random as r\nr.shuffle([])",
    "from random import choice", "import random\nf = random.randint",
    "def f():\n    import time\n    return time.time()",
])
def test_checker_catches(source):
    assert violations(source)


@pytest.mark.parametrize("source", [
    "import random\nrng = random.Random(4)", "from random import Random",
    "import random\ndef f(rng: random.Random) -> int:\n    return rng.randint(0, 9)",
    "import bisect, msgpack", "from ringkv.clock import Clock",
    "from . import time_utils",
])
def test_checker_allows(source):
    assert violations(source) == []
