"""Least-busy accept: which receiving process takes the next association.

All receiving processes wait on one listening socket. Each publishes how many connections it
has open in a small shared array; a process that has more open than another live process lets
a pending connection wait for the less busy one, and takes it itself only if it is still
waiting after :data:`PATIENCE_S` (the other process may be stuck or restarting). Four
associations over two processes are therefore split two and two, where the kernel's
``SO_REUSEPORT`` hash puts all four on one process one time in eight.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import select
import socket
import threading
import time
from typing import TypeAlias

#: One open-connection count per receiving process, in memory shared with the children.
SharedCounts: TypeAlias = "ctypes.Array[ctypes.c_int]"

#: A slot whose process is dead or not started: never waited for.
VACANT = -1
#: How long a busier process leaves a pending connection to a less busy one.
PATIENCE_S = 0.25
#: How often a waiting process looks whether the connection was taken.
LOOK_EVERY_S = 0.002


class AcceptBalance:
    """This process's view of the shared open-connection counts (one slot per process)."""

    def __init__(self, counts: SharedCounts, slot: int) -> None:
        """Use slot ``slot`` of ``counts`` (a shared array) for this process."""
        self._counts = counts
        self._slot = slot
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        counts[slot] = 0

    @classmethod
    def create(cls, processes: int) -> AcceptBalance:
        """Shared counts for ``processes`` processes; this process takes slot 0.

        The other slots stay :data:`VACANT` until their process starts (:meth:`for_slot`).
        """
        return cls(multiprocessing.RawArray(ctypes.c_int, [VACANT] * processes), 0)

    @property
    def counts(self) -> SharedCounts:
        """The shared array, to hand to a child process (it calls :meth:`for_slot`)."""
        return self._counts

    @classmethod
    def for_slot(cls, counts: SharedCounts, slot: int) -> AcceptBalance:
        """A child's view of ``counts`` (from :attr:`counts`) in slot ``slot``."""
        return cls(counts, slot)

    @staticmethod
    def vacate(counts: SharedCounts, slot: int) -> None:
        """Mark a dead process's slot so that nobody waits for it."""
        counts[slot] = VACANT

    def snapshot(self) -> list[int]:
        """Every slot's count, :data:`VACANT` for processes not serving."""
        return [int(count) for count in self._counts]

    def accepted(self, connection: socket.socket) -> None:
        """Count a connection this process has just accepted."""
        with self._lock:
            self._open.append(connection)
            self._publish()

    def replaced(self, raw: socket.socket, wrapped: socket.socket) -> None:
        """Count ``wrapped`` (a TLS socket) in place of ``raw``, which it took over."""
        with self._lock:
            # ``raw`` is closed once wrapped, so a refresh may have forgotten it already.
            self._open = [c for c in self._open if c is not raw]
            self._open.append(wrapped)
            self._publish()

    def refresh(self) -> None:
        """Forget closed connections and publish the count (after a connection closes)."""
        with self._lock:
            self._publish()

    def _publish(self) -> None:
        self._open = [c for c in self._open if c.fileno() != -1]
        self._counts[self._slot] = len(self._open)

    def another_is_less_busy(self) -> bool:
        """Whether another serving process has fewer connections open than this one."""
        counts = self.snapshot()
        mine = counts[self._slot]
        return any(VACANT < count < mine for slot, count in enumerate(counts) if slot != self._slot)

    def total_open(self) -> int:
        """Connections open in every serving process together."""
        return sum(count for count in self.snapshot() if count > VACANT)

    def wait_for_turn(self, listening: socket.socket, patience_s: float = PATIENCE_S) -> None:
        """Return when this process should accept the pending connection.

        That is at once if no other process is less busy, as soon as the connection has been
        taken by another process (the accept that follows then finds nothing), or after
        ``patience_s``.
        """
        self.refresh()
        deadline = time.monotonic() + patience_s
        while self.another_is_less_busy() and time.monotonic() < deadline:
            time.sleep(LOOK_EVERY_S)
            if not select.select([listening], [], [], 0)[0]:
                return
