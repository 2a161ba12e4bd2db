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
