"""Leader election: one process per data folder runs completion, the reconciler and recovery.

Several receiving processes (and, briefly, two services started on one folder) may share a
storage folder; the one holding an exclusive ``flock`` on a file next to it is the leader. The
kernel drops the lock when its holder dies, so a standby takes over without any timeout.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from dicom_edge import FileLock

log = logging.getLogger(__name__)

LOCK_NAME = ".listener-leader.lock"


class LeaderLock(FileLock):
    """The leader's lock, next to the storage folder; held means "this process leads"."""

    def __init__(self, storage_dir: Path) -> None:
        """Prepare the lock file next to ``storage_dir`` (nothing is locked yet)."""
        super().__init__(storage_dir / LOCK_NAME)


class LeaderElection:
    """Run ``on_elected`` once, in this process, as soon as it holds the leader lock."""

    def __init__(
        self, lock: LeaderLock, on_elected: Callable[[], object], *, retry_s: float = 1.0
    ) -> None:
        """Create the election; :meth:`start` tries at once, then every ``retry_s`` seconds."""
        self.lock = lock
        self._on_elected = on_elected
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this process is the leader."""
        return self.lock.held

    def start(self) -> bool:
        """Try to lead now; a standby keeps trying in a thread. Return whether elected now."""
        if self.lock.try_acquire():
            self._on_elected()
            return True
        log.info("Another process leads %s; this one only receives", self.lock.path.parent)
        self._thread = threading.Thread(target=self._wait, name="leader-election", daemon=True)
        self._thread.start()
        return False

    def stop(self) -> None:
        """Stop waiting and give the lock up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.lock.release()

    def _wait(self) -> None:
        while not self._stop.wait(self._retry_s):
            if self.lock.try_acquire():
                log.warning("Took over as leader of %s", self.lock.path.parent)
                self._on_elected()
                return
