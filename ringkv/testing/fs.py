"""In-memory file system for crash tests: ``crash()`` keeps only what was made durable.

Implements the engine's file seam (ringkv/storage/fs.py) in memory. Durability is modelled
the way POSIX promises it, no better: a file's bytes survive a crash only up to its last
``sync()``, and a name (create, rename, remove) survives only once its directory was
``sync_dir``'d. ``freeze_after(n)`` simulates power loss at an arbitrary point: after ``n``
more mutating calls every mutating call raises ``OSError(EIO)``, so the engine stops
mid-flush, mid-compaction or mid-group-commit; ``crash()`` then throws away everything not
durable and unfreezes, ready for a fresh ``Engine.open`` on the same object.
``capacity`` sets what ``free_bytes`` reports; with ``enforce_capacity`` a write past it
writes what fits and fails with ENOSPC, as a full disk does (D42).

A preallocated file (``open_preallocated``, D43) is zeros, synced, written over from its
start: a crash keeps what was written over it up to its last ``sync()`` and zeros after
that, as a real disk keeps the synced zeros where later writes were not synced.

``crash(rng)`` is a harsher power loss, still within what POSIX allows: the kernel writes
dirty pages back in any order, so of what was written after a file's last ``sync()`` each
512-byte block (``BLOCK``, on file offsets) independently survives or is lost (zeros, as
the disk held there), and an appended file keeps any length between its synced size and
its written one.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from typing import Callable, Optional

BLOCK = 512  # the unit out-of-order writeback keeps or loses in crash(rng): a disk sector


class _Node:
    """A file: its bytes, of which the first ``synced`` survive a crash (files only grow).

    A preallocated one (``prealloc`` > 0, its zero-filled size): the first ``synced`` bytes
    written over its zeros survive as written, the rest up to ``prealloc`` as zeros."""

    __slots__ = ("data", "synced", "prealloc")

    def __init__(self) -> None:
        self.data = bytearray()
        self.synced = 0
        self.prealloc = 0

    def lose_unsynced(self, rng: Optional[random.Random] = None) -> None:
        """A crash: keep only what is durable; with ``rng``, also some unsynced blocks,
        in no order (see the module docstring)."""
        written, synced = self.data, self.synced
        if self.prealloc:  # a size change is not durable: zeros up to the zero-filled size
            size = max(self.prealloc, synced)
            self.data = written[:synced] + bytes(max(size - synced, 0))
        else:
            size = synced if rng is None else rng.randint(synced, len(written))
            self.data = written[:synced] + bytes(size - synced)
        if rng is None:
            return
        for block in range(synced // BLOCK * BLOCK, min(size, len(written)), BLOCK):
            if rng.random() < 0.5:  # this block reached the disk before the power failed
                lo, hi = max(block, synced), min(block + BLOCK, size, len(written))
                self.data[lo:hi] = written[lo:hi]


class MemWritableFile:
    def __init__(self, fs: "MemFileSystem", path: str, node: _Node) -> None:
        self.path, self._fs, self._node, self._epoch = path, fs, node, fs.epoch
        self.size = 0

    def write(self, data: bytes) -> None:
        self._fs._mutate(self._epoch)
        node = self._node
        if node.prealloc:  # written over the zeros from the current position
            node.data[self.size:self.size + len(data)] = data
            self.size += len(data)
            return
        if self._fs.enforce_capacity:  # a full disk: what fits is written, then ENOSPC
            room = self._fs.free_bytes(self.path)
            if len(data) > room:
                node.data += data[:max(room, 0)]
                raise OSError(errno.ENOSPC, "No space left on device (simulated)", self.path)
        node.data += data
        self.size += len(data)

    def truncate(self, size: int) -> None:
        self._fs._mutate(self._epoch)
        del self._node.data[size:]
        self._node.synced = min(self._node.synced, size)
        self._node.prealloc = min(self._node.prealloc, size)
        self.size = size

    def sync(self) -> None:
        self._fs._mutate(self._epoch)
        node = self._node  # a length, not a copy: O(1) per fsync
        node.synced = self.size if node.prealloc else len(node.data)

    def close(self) -> None:
        pass


class MemReadableFile:
    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self._data = data
        self.size = len(data)

    def pread(self, n: int, offset: int) -> bytes:
        return self._data[offset:offset + n]

    def close(self) -> None:
        pass


class MemFileSystem:
    """A whole file system in memory, with a durable shadow of it for ``crash()``."""

    def __init__(self) -> None:
        self._live: dict[str, _Node] = {}
        self._durable: dict[str, _Node] = {}
        self._dirs: set[str] = set()
        self._lock = threading.Lock()
        self._budget: Optional[int] = None
        self.capacity = 1 << 50  # bytes: free_bytes() is this minus the live files' size
        # True: a write past capacity writes what fits and fails with ENOSPC, as a full
        # disk does (False: capacity only sets what free_bytes() reports)
        self.enforce_capacity = False
        # a test's fault: open_write of a path this accepts fails with refuse_errno
        # (default EMFILE: no descriptors left), as long as it is set
        self.refuse_open: Optional[Callable[[str], bool]] = None
        self.refuse_errno = errno.EMFILE
        self.epoch = 0
        self.syncs = 0

    # -- faults ------------------------------------------------------------------------
    def freeze_after(self, n: int) -> None:
        """After ``n`` more mutating calls, fail every mutating call with EIO."""
        self._budget = n

    def crash(self, rng: Optional[random.Random] = None) -> None:
        """Lose everything not durable; handles opened before the crash stop working.
        With ``rng``, out-of-order writeback: some unsynced blocks survive (module doc)."""
        with self._lock:
            self._live = dict(self._durable)
            for node in self._live.values():
                node.lose_unsynced(rng)
            self._budget = None
            self.epoch += 1

    def _mutate(self, epoch: Optional[int] = None) -> None:
        if epoch is not None and epoch != self.epoch:
            raise OSError(errno.EIO, "file handle from before a crash")
        if self._budget is not None:
            if self._budget <= 0:
                raise OSError(errno.EIO, "simulated power loss")
            self._budget -= 1

    # -- the seam ------------------------------------------------------------------------
    def open_write(self, path: str) -> MemWritableFile:
        refuse = self.refuse_open
        if refuse is not None and refuse(path):
            raise OSError(self.refuse_errno, f"{os.strerror(self.refuse_errno)} (injected)", path)
        with self._lock:
            self._mutate()
            node = _Node()
            self._live[path] = node
            return MemWritableFile(self, path, node)

    def open_preallocated(self, path: str, size: int,
                          stop: Callable[[], bool]) -> Optional[MemWritableFile]:
        """A new file of ``size`` zeros, synced, open for writing from its start (see
        OsFileSystem.open_preallocated); one mutating call. Its name is durable only once
        its directory is synced."""
        if stop():
            return None
        if self.enforce_capacity and size > self.free_bytes(path):
            raise OSError(errno.ENOSPC, "No space left on device (simulated)", path)
        with self._lock:
            self._mutate()
            node = _Node()
            node.data = bytearray(size)
            node.prealloc = size
            self._live[path] = node
            return MemWritableFile(self, path, node)

    def open_read(self, path: str) -> MemReadableFile:
        return MemReadableFile(path, self.read_all(path))

    def read_all(self, path: str) -> bytes:
        try:
            return bytes(self._live[path].data)
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "no such file", path) from None

    def free_bytes(self, path: str) -> int:
        """``capacity`` minus what the live files hold (a test lowers capacity to fill it)."""
        with self._lock:
            return self.capacity - sum(len(n.data) for n in self._live.values())

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            self._mutate()
            self._live[dst] = self._live.pop(src)

    def remove(self, path: str) -> None:
        with self._lock:
            self._mutate()
            self._live.pop(path, None)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.path.basename(p) for p in self._live if os.path.dirname(p) == path) + \
            sorted(os.path.basename(d) for d in self._dirs if os.path.dirname(d) == path)

    def makedirs(self, path: str) -> None:
        while path and path not in self._dirs and path != os.path.dirname(path):
            self._dirs.add(path)  # directories themselves are always durable here
            path = os.path.dirname(path)

    def exists(self, path: str) -> bool:
        return path in self._live or path in self._dirs

    def sync_dir(self, path: str) -> None:
        with self._lock:
            self._mutate()
            self.syncs += 1
            for p in set(self._live) | set(self._durable):
                if os.path.dirname(p) == path:
                    if p in self._live:
                        self._durable[p] = self._live[p]
                    else:
                        self._durable.pop(p, None)

    def lock(self, path: str) -> object:
        return path

    def unlock(self, handle: object) -> None:
        pass
