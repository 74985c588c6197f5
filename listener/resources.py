"""Back-pressure: is there room on disk, and is the queue short enough, to accept more?"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import db.jobs
from db.engine import SessionFactory
from db.errors import DatabaseAccessError
from listener.errors import OutOfResourcesError

log = logging.getLogger(__name__)

MB = 1024 * 1024
#: How long a measurement is reused (statvfs and a COUNT are cheap, but not per instance).
CACHE_S = 1.0


def free_disk_mb(path: Path) -> float:
    """Free space (for unprivileged users) on the file system holding ``path``, in MiB."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize / MB


def waiting_jobs(session_factory: SessionFactory) -> int:
    """Jobs in the outbox or on the broker, not yet taken by a worker."""
    with session_factory() as session:
        return db.jobs.count_waiting_jobs(session=session)


class _Cached:
    """A value measured at most once per ``CACHE_S``."""

    def __init__(self, measure: Callable[[], float]) -> None:
        self._measure = measure
        self._lock = threading.Lock()
        self._value = 0.0
        self._at = float("-inf")

    def get(self) -> float:
        with self._lock:
            now = time.monotonic()
            if now - self._at >= CACHE_S:
                self._value = self._measure()
                self._at = now
            return self._value


class ResourceGuard:
    """Says whether the listener can take more data now."""

    def __init__(
        self,
        *,
        storage_dir: Path,
        min_free_disk_mb: float,
        session_factory: SessionFactory,
        queue_high_water: int,
    ) -> None:
        self._min_free_disk_mb = min_free_disk_mb
        self._queue_high_water = queue_high_water
        self._free = _Cached(lambda: free_disk_mb(storage_dir))
        self._waiting = _Cached(lambda: float(waiting_jobs(session_factory)))

    def check_disk(self) -> None:
        """Raise OutOfResourcesError when storage has less free space than the threshold."""
        if self._min_free_disk_mb <= 0:
            return
        free = self._free.get()
        if free < self._min_free_disk_mb:
            raise OutOfResourcesError(
                f"Storage has {free:.0f} MiB free, less than the {self._min_free_disk_mb:.0f} "
                "MiB required."
            )

    def check_queue(self) -> None:
        """Raise OutOfResourcesError when too many jobs wait for a worker."""
        if self._queue_high_water <= 0:
            return
        try:
            waiting = int(self._waiting.get())
        except DatabaseAccessError as exc:
            raise OutOfResourcesError(f"The database cannot be reached: {exc}") from exc
        if waiting >= self._queue_high_water:
            raise OutOfResourcesError(
                f"{waiting} jobs wait for a worker, at or above the high-water mark of "
                f"{self._queue_high_water}."
            )

    def check(self) -> None:
        """Both checks."""
        self.check_disk()
        self.check_queue()
