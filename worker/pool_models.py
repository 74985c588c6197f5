"""Which prefork pool children hold their model: for the parent's ``/ready``.

The parent answers ``/ready`` but loads no model; its children do. A counter that only grows
would lie once the children that loaded a model have died (recycled, killed, out of memory)
and their replacements could not load theirs. So the pids are kept, in memory shared across
the fork, and only a live child counts.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

SLOTS = 256
"""Most children tracked at once (far more than a pool has)."""


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (not gone, not a zombie waiting to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now: not our child
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc: trust the signal
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


class LoadedChildren:
    """The pids of the pool children that have loaded their model."""

    def __init__(self, slots: int = SLOTS) -> None:
        """Allocate the shared table (before the pool forks)."""
        self._pids = multiprocessing.Array("i", slots)

    def add(self, pid: int) -> None:
        """Record that ``pid`` holds its model (idempotent; a dead child's slot is reused)."""
        with self._pids.get_lock():
            pids = self._held()
            if pid in pids:
                return
            for index, held in enumerate(pids):
                if held == 0 or not _alive(held):
                    self._pids[index] = pid
                    return

    def remove(self, pid: int) -> None:
        """Forget ``pid`` (the child is shutting down)."""
        with self._pids.get_lock():
            for index, held in enumerate(self._held()):
                if held == pid:
                    self._pids[index] = 0

    def any_alive(self) -> bool:
        """Whether a live child holds its model."""
        with self._pids.get_lock():
            held = [pid for pid in self._held() if pid]
        return any(_alive(pid) for pid in held)

    def _held(self) -> list[int]:
        return [int(pid) for pid in self._pids[:]]
