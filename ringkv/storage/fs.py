"""The file seam of the storage engine (LevelDB's ``Env``, cut down to what we use).

Every byte the engine reads or writes goes through a ``FileSystem``, so tests can swap in
a fake that loses unsynced data or injects faults. Invariants of :class:`OsFileSystem`:
``WritableFile.sync`` returns only after ``fsync`` succeeded; ``sync_dir`` makes renames
and new directory entries durable; ``ReadableFile.pread`` is a bound ``os.pread`` so the
read hot path costs one C call.
"""

from __future__ import annotations

import fcntl
import functools
import os
from typing import Callable

from ringkv.errors import Closed, ConfigError


_datasync = getattr(os, "fdatasync", os.fsync)
PREALLOCATE_CHUNK = 1 << 20  # bytes of zeros per write while preallocating (stop checked between)


class WritableFile:
    """An append-only file opened for writing (created or truncated)."""

    __slots__ = ("path", "_fd", "size")

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size = 0

    def write(self, data: bytes) -> None:
        """Append all of ``data`` (loops over short writes)."""
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.size += len(data)

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes and write on from there: undoes a write that
        failed part-way (ENOSPC after a short write), so no torn record is left behind."""
        os.ftruncate(self._fd, size)
        os.lseek(self._fd, size, os.SEEK_SET)
        self.size = size

    def rewind(self) -> None:
        """Write on from the start of the file (a preallocated one: over its zeros)."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        self.size = 0

    def sync(self) -> None:
        """Make everything written so far durable (fdatasync: data and the size change,
        which is all an append needs; cheaper than a full fsync)."""
        _datasync(self._fd)

    def fileno(self) -> int:
        """The OS file descriptor (for the native fsync thread, D30)."""
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class ReadableFile:
    """A file opened for positional reads; ``pread(n, offset)`` is the only read call."""

    __slots__ = ("path", "_fd", "pread", "size")

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self.pread = functools.partial(os.pread, self._fd)
        self.size = os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            # rebind first: a late pread must fail, never hit a reused descriptor number
            self.pread = _closed_pread
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # readers may outlive the table list that owned them
        try:
            self.close()
        except Exception:
            pass


def _closed_pread(n: int, offset: int) -> bytes:
    raise Closed("file is closed")


class OsFileSystem:
    """The real file system."""

    def open_write(self, path: str) -> WritableFile:
        return WritableFile(path)

    def open_read(self, path: str) -> ReadableFile:
        return ReadableFile(path)

    def open_preallocated(self, path: str, size: int, stop: Callable[[], bool]) -> WritableFile | None:
        """A new file at ``path`` of ``size`` zero bytes, written and synced, open for
        writing from its start (its ``size`` attribute counts from 0): writes into it then
        change no file size, so an fdatasync writes the data alone, with no journal commit
        (D43). None, the file removed, if ``stop()`` turns true before it is done; on an
        OSError (ENOSPC: no room) the file is removed and the error raised."""
        f = WritableFile(path)
        try:
            zeros = bytes(PREALLOCATE_CHUNK)
            left = size
            while left > 0:
                if stop():
                    f.close()
                    self.remove(path)
                    return None
                f.write(zeros[:left] if left < len(zeros) else zeros)
                left -= len(zeros)
            f.sync()
            f.rewind()
        except BaseException:
            f.close()
            self.remove(path)
            raise
        return f

    def read_all(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def link(self, src: str, dst: str) -> int:
        """Hard-link ``src`` as ``dst`` (same file system); the file's size."""
        os.link(src, dst)
        return os.stat(dst).st_size

    def free_bytes(self, path: str) -> int:
        """Bytes an unprivileged writer may still use on ``path``'s file system."""
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    def remove(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def sync_dir(self, path: str) -> None:
        """fsync a directory so that renames and created files in it survive a crash."""
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: str) -> object:
        """Take an exclusive advisory lock (released by ``unlock`` or process death)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError("storage", f"{os.path.dirname(path) or '.'} is already open "
                              "by another engine (another node on the same data_dir?)") from None
        except OSError:
            os.close(fd)
            raise
        return fd

    def unlock(self, handle: object) -> None:
        os.close(handle)  # type: ignore[arg-type]
