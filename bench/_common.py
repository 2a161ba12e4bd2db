"""Small helpers shared by the benchmark scripts in ``bench/`` (no ringkv imports here).

Everything a benchmark prints about the machine, memory and results goes through these,
so that ``bench/storage.py`` and ``bench/cluster.py`` report in the same shape.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
from typing import Iterable, Sequence


def median(values: Iterable[float]) -> float:
    """Median of the values (the middle one for 3 repetitions); nan for none."""
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else float("nan")


def proc_status_kb(field: str, pid: int | str = "self") -> int:
    """A ``kB`` field of /proc/<pid>/status (``VmHWM`` = peak RSS, ``VmRSS`` = current)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def peak_rss_kb() -> int:
    """Peak resident set size of this process so far, in KiB (VmHWM)."""
    return proc_status_kb("VmHWM")


def rss_kb() -> int:
    """Current resident set size of this process, in KiB (VmRSS)."""
    return proc_status_kb("VmRSS")


def dir_bytes(path: str) -> int:
    """Bytes allocated on disk by the files under ``path`` (like ``du``)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            total += st.st_blocks * 512
    return total


def cpu_model() -> str:
    """``lscpu`` model name (falls back to /proc/cpuinfo)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_line() -> str:
    """One line naming the machine: CPUs, model, load, kernel, Python, UTC time."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{now} · {os.cpu_count()} CPUs ({cpu_model()}) · load avg {load_average()} · "
            f"Linux {platform.release()} · Python {platform.python_version()}")


def fmt_ops(x: float | None) -> str:
    """Ops/s with thousands separators, or '-' when not measured."""
    if x is None or x != x:
        return "-"
    return f"{x:,.0f}"


def fmt_ratio(x: float | None) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:.2f}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """A right-aligned text table (first column left-aligned), or a markdown table."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |",
                 "| " + " | ".join(["---"] + ["---:"] * (len(headers) - 1)) + " |"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    out = []
    for i, r in enumerate([headers, *rows]):
        cells = [str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_test_pki(directory: str) -> dict[str, str]:
    """A throwaway CA (trustme) and a certificate for 127.0.0.1/localhost signed by it, as
    PEM files in ``directory``: {"ca", "cert", "key"} -> path. For benchmarks of TLS."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {name: os.path.join(directory, base)
             for name, base in (("ca", "ca.pem"), ("cert", "node.pem"), ("key", "node.key"))}
    ca.cert_pem.write_to_path(files["ca"])
    cert.private_key_pem.write_to_path(files["key"])
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(files["cert"], append=i > 0)
    return files
