"""One listener per data folder: an exclusive lock held for the life of `up` or `listen`."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_FILE_NAME = "stroke-triage.lock"


class DataDirLockedError(Exception):
    """Another `up` or `listen` already holds the data folder."""


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/stroke-triage.lock``.

    The kernel drops the lock when the process ends, however it ends (SIGKILL included), so a
    stale lock file never blocks a restart. Workers do not take it: many may share the folder.
    """

    def __init__(self, data_dir: Path) -> None:
        """Remember where the lock file lives; :meth:`acquire` takes the lock."""
        self.path = data_dir / LOCK_FILE_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock without waiting.

        Raises:
            DataDirLockedError: If another process holds it; the message names its process ID.
        """
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise DataDirLockedError(
                f"Another stroke-triage service (process {holder}) is already using the data "
                f"folder {self.path.parent.resolve()}. Stop it first, or give this one its own "
                "STROKE_TRIAGE_DATA_DIR."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Drop the lock (the file stays; it is harmless when unlocked)."""
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> DataDirLock:
        """Acquire on entry."""
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        """Release on exit."""
        self.release()
