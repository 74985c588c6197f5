"""One listener per data folder: an exclusive lock held for the life of `up` or `listen`."""

from __future__ import annotations

from pathlib import Path

from dicom_edge import FileLock

LOCK_FILE_NAME = "stroke-triage.lock"


class DataDirLockedError(Exception):
    """Another `up` or `listen` already holds the data folder."""


class DataDirLock:
    """An exclusive lock on ``<data_dir>/stroke-triage.lock``.

    A :class:`~dicom_edge.FileLock`. Workers do not take it: many may share the folder.
    """

    def __init__(self, data_dir: Path) -> None:
        """Remember where the lock file lives; :meth:`acquire` takes the lock."""
        self._lock = FileLock(data_dir / LOCK_FILE_NAME)
        self.path = self._lock.path

    def acquire(self) -> None:
        """Take the lock without waiting.

        Raises:
            DataDirLockedError: If another process holds it; the message names its process ID.
        """
        if not self._lock.try_acquire():
            raise DataDirLockedError(
                f"Another stroke-triage service (process {self._lock.holder()}) is already "
                f"using the data folder {self.path.parent.resolve()}. Stop it first, or give "
                "this one its own STROKE_TRIAGE_DATA_DIR."
            )

    def release(self) -> None:
        """Drop the lock (the file stays; it is harmless when unlocked)."""
        self._lock.release()

    def __enter__(self) -> DataDirLock:
        """Acquire on entry."""
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        """Release on exit."""
        self.release()
