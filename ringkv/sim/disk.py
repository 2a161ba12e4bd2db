"""Per-node simulated disks: an in-memory file system whose crash keeps only fsync'd bytes.

A :class:`NodeDisk` holds one :class:`ringkv.testing.fs.MemFileSystem` (POSIX durability,
no better: file bytes survive up to their last ``sync``, names once their directory was
synced). Each incarnation of the node opens it through :meth:`NodeDisk.view`; ``crash``
drops everything not durable and fences the old view, so every later call by a zombie
of the dead incarnation fails with ``EIO`` instead of writing into the new one's files.

The engine and the hint store go through this seam. A node's identity (node.toml) and
topology progress live in a small real directory per node (written once and fsync'd by
their own code), which survives crashes as it would on a real disk.
"""

from __future__ import annotations

import errno
from typing import Any

from ringkv.testing.fs import MemFileSystem


class NodeDisk:
    def __init__(self) -> None:
        self.fs = MemFileSystem()
        self.generation = 0
        self.crashes = 0

    def view(self) -> "DiskView":
        return DiskView(self, self.generation)

    def crash(self) -> None:
        """Power loss: unsynced bytes and names are gone; old views stop working."""
        self.generation += 1
        self.crashes += 1
        self.fs.crash()

    def clean_stop(self) -> None:
        """A clean shutdown: fence the old view, keep everything."""
        self.generation += 1


class DiskView:
    """The file seam for one incarnation; fenced once its disk crashed."""

    def __init__(self, disk: NodeDisk, generation: int) -> None:
        self._disk, self._gen = disk, generation

    def _fs(self) -> MemFileSystem:
        if self._disk.generation != self._gen:
            raise OSError(errno.EIO, "disk of a crashed incarnation")
        return self._disk.fs

    def open_write(self, path: str) -> Any:
        return _FencedFile(self, self._fs().open_write(path))

    def open_read(self, path: str) -> Any:
        return self._fs().open_read(path)

    def read_all(self, path: str) -> bytes:
        return self._fs().read_all(path)

    def rename(self, src: str, dst: str) -> None:
        self._fs().rename(src, dst)

    def remove(self, path: str) -> None:
        self._fs().remove(path)

    def listdir(self, path: str) -> list[str]:
        return self._fs().listdir(path)

    def makedirs(self, path: str) -> None:
        self._fs().makedirs(path)

    def exists(self, path: str) -> bool:
        return self._fs().exists(path)

    def sync_dir(self, path: str) -> None:
        self._fs().sync_dir(path)

    def lock(self, path: str) -> object:
        return self._fs().lock(path)

    def unlock(self, handle: object) -> None:
        pass


class _FencedFile:
    __slots__ = ("_view", "_f", "path")

    def __init__(self, view: DiskView, f: Any) -> None:
        self._view, self._f, self.path = view, f, f.path

    @property
    def size(self) -> int:
        return self._f.size

    def write(self, data: bytes) -> None:
        self._view._fs()
        self._f.write(data)

    def sync(self) -> None:
        self._view._fs()
        self._f.sync()

    def close(self) -> None:
        pass


__all__ = ["NodeDisk", "DiskView"]
