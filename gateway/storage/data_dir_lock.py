"""One process at a time per embedded store: an exclusive lock on ``DATA_DIR/.lock``.

The embedded engine takes locks of its own deep inside (a second process fails with "Can't init WAL:
WouldBlock"); this lock is taken first, so a second gateway or ``polyvec up`` on the same DATA_DIR is
told plainly, and told which process holds it. The lock is an ``flock`` on an open file: it goes away
with the process that holds it, also when that process is killed.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from gateway.storage.base import StoreError


class DataDirInUse(StoreError):
    """Another process holds the DATA_DIR lock."""


class DataDirLock:
    """An exclusive lock on a data directory, held until :meth:`release`."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: str | Path) -> DataDirLock:
        """Take the lock (creating the directory) or raise :class:`DataDirInUse` at once (no waiting)."""
        path = Path(data_dir)
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise DataDirInUse(f"DATA_DIR {path.resolve()} is in use by another polyvec process{who}; "
                               "stop it or give this one another DATA_DIR") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __del__(self) -> None:  # a store whose opening failed half-way drops its lock with it
        self.release()
