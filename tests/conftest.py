"""Shared test configuration: the root-test policy and common fixtures."""

from __future__ import annotations

import os

import pytest

REQUIRE_ROOT = os.environ.get("RINGKV_REQUIRE_ROOT_TESTS") == "1"


def require_root(reason: str = "needs root to create network namespaces") -> None:
    """Skip (visibly) when not root; fail instead when RINGKV_REQUIRE_ROOT_TESTS=1."""
    if os.geteuid() != 0:
        if REQUIRE_ROOT:
            pytest.fail(f"RINGKV_REQUIRE_ROOT_TESTS=1 but not root: {reason}")
        pytest.skip(f"not root: {reason}")


def require_tool(tool: str, package: str) -> None:
    """Skip (visibly) when a system tool is missing; fail when RINGKV_REQUIRE_ROOT_TESTS=1,
    since `make test` installs it there (as root)."""
    import shutil

    if shutil.which(tool) is None:
        message = f"{tool} not installed (apt-get install {package}; `make test` does this as root)"
        if REQUIRE_ROOT:
            pytest.fail(f"RINGKV_REQUIRE_ROOT_TESTS=1 but {message}")
        pytest.skip(message)
