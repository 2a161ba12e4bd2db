"""A node takes the open-files limit the administrator allows (its hard limit), so a
system that starts processes at a soft limit of 1024 does not cap its connections and
tables there; a limit it cannot raise far enough is logged. Real node processes."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

from ringkv.testing.cluster import free_port


def _serve_with_limits(tmp_path: Path, soft: int, hard: int) -> tuple[int, str]:
    """Start a node whose open-files limits are (soft, hard); its soft limit once serving,
    and its log."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringkv.cli", "server", "--port", str(port), "--http-port",
         str(free_port()), "--data-dir", str(tmp_path / "d")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert "serving on" in line, proc.stderr.read()  # type: ignore[union-attr]
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        row = next(r for r in limits.splitlines() if r.startswith("Max open files"))
        now = int(row.split()[3])
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    return now, err


def test_the_soft_limit_is_raised_to_the_hard_one(tmp_path):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    now, log = _serve_with_limits(tmp_path, 256, hard)
    expected = hard if hard != resource.RLIM_INFINITY else 1 << 20  # server.py's stand-in
    assert now == expected
    assert f"open files limit raised from 256 to {expected}" in log


def test_a_low_hard_limit_is_logged(tmp_path):
    now, log = _serve_with_limits(tmp_path, 300, 300)
    assert now == 300
    assert "open files limit is 300" in log and "LimitNOFILE" in log
