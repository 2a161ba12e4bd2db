"""One real ringkv node process, as tests, the chaos harness and benchmarks hold it.

:class:`NodeProcess` is the part every process manager shares (``testing.cluster`` on
loopback, ``chaos.nodes`` inside network namespaces): where the node's files are, how it
is started, signalled and reaped, and whether its current process printed the ready line.
The managers add addressing (free ports, or a namespace host) and configs.

Invariants: the log under ``root/node.log`` is appended across restarts, and
``log_offset`` marks where the current process's output starts, so a ready line printed
by an earlier incarnation never counts. ``reap`` always resumes a paused process first
(a stopped process cannot die of SIGTERM) and falls back to SIGKILL, so it never hangs.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

READY = b"serving on"  # what ringkv.server prints once it serves


class NodeProcess:
    """Mixin for a node handle with ``root: Path``, ``proc``, ``paused`` and
    ``log_offset`` attributes (the dataclasses that use it declare them)."""

    root: Path
    proc: subprocess.Popen | None
    paused: bool
    log_offset: int

    @property
    def config_path(self) -> Path:
        return self.root / "ringkv.toml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "node.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the node's log ("" if there is none yet)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def spawn(self, cmd: list[str]) -> None:
        """Start ``cmd`` in its own session, output appended to the log; does not wait."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, cwd=self.root,
                                         start_new_session=True)
        self.paused = False

    def send(self, sig: int) -> None:
        """Deliver ``sig`` to the current process, if it runs."""
        if self.running:
            assert self.proc is not None
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def reap(self, timeout: float) -> int | None:
        """Wait for the process to exit (SIGKILL after ``timeout``); its exit code."""
        if self.proc is None:
            return None
        if self.paused:
            self.send(signal.SIGCONT)
            self.paused = False
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10.0)

    def printed_ready(self) -> bool:
        """Whether the current process printed its ready line."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return READY in f.read()
        except OSError:
            return False


__all__ = ["NodeProcess", "READY"]
