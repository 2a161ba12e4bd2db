"""What a preallocated commit-log segment saves per fsync (D43): one file system, two files.

The commit log's group commit is a ``write`` of a few records followed by ``fdatasync``.
Into a file that grows, each fdatasync also commits the new file size (on ext4 a journal
commit); into a file already written full of zeros and synced, it writes the data alone.
This script times both, and a third file whose blocks were only reserved with
``posix_fallocate`` (the cheaper way to preallocate, which leaves the extents marked
unwritten), interleaved in rounds, with the same write size and count, on the file system
of ``--dir`` (default: a temporary directory under the current one, so it measures the
disk the data directory would be on): wall time, CPU time and voluntary context switches
per write+fdatasync, and each one's ratio to appending.

    python bench/fsync_prealloc.py                      # 2000 x 1500-byte writes, 3 rounds
    python bench/fsync_prealloc.py --writes 500 --bytes 4096 --dir /var/lib/ringkv

Bounded: ``--writes`` x ``--rounds`` x 3 fdatasyncs, files removed at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_line, median  # noqa: E402


KINDS = ("appending", "zero-filled", "fallocated")


def one_run(path: str, writes: int, size: int, kind: str) -> tuple[float, float, float]:
    """(wall µs, CPU µs, voluntary context switches) per write+fdatasync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if kind == "zero-filled":  # as ringkv/storage/fs.py open_preallocated: zeros, synced, rewound
            os.write(fd, bytes(writes * size + 4096))
            os.lseek(fd, 0, os.SEEK_SET)
        elif kind == "fallocated":  # blocks reserved (unwritten extents), nothing written
            os.posix_fallocate(fd, 0, writes * size + 4096)
        os.fdatasync(fd)
        block = b"r" * size
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(writes):
            os.write(fd, block)
            os.fdatasync(fd)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.close(fd)
        os.remove(path)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall / writes * 1e6, cpu / writes * 1e6, (r1.ru_nvcsw - r0.ru_nvcsw) / writes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writes", type=int, default=2000, help="write+fdatasync calls per run")
    ap.add_argument("--bytes", type=int, default=1500, help="bytes per write (a group of ~10 puts)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both")
    ap.add_argument("--dir", default=None, help="directory on the file system to measure")
    args = ap.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory(dir=args.dir or ".", prefix="fsync-prealloc-") as d:
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in KINDS}
        for r in range(args.rounds):
            for kind in KINDS:
                res = one_run(os.path.join(d, "seg"), args.writes, args.bytes, kind)
                results[kind].append(res)
                print(f"round {r + 1} {kind:<11}: {res[0]:7.1f} µs wall  {res[1]:6.1f} µs CPU  "
                      f"{res[2]:4.2f} vcsw per write+fdatasync")
    med = {k: [median(x[i] for x in results[k]) for i in range(3)] for k in KINDS}
    base = med["appending"]
    for kind in KINDS:
        m = med[kind]
        print(f"median of {args.rounds}, {kind:<11}: {m[0]:7.1f} µs wall  {m[1]:6.1f} µs CPU  "
              f"{m[2]:4.2f} vcsw   vs appending: wall {m[0] / base[0]:.2f}  CPU {m[1] / base[1]:.2f}")


if __name__ == "__main__":
    main()
