"""Extra receiving processes that share the listener's port, restarted when one dies.

The listener's own process receives too and is the one that supervises; each child runs its
own pynetdicom server on the listener's listening socket (inherited; the least busy process
accepts each association, :mod:`listener.balance`), its own recorder and nothing else.
Completion, the reconciler and recovery stay with the leader (:mod:`listener.leader`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, cast

log = logging.getLogger(__name__)

#: Modules the fork server imports once, so that a (re)started receiver is ready in
#: milliseconds instead of importing pynetdicom and SQLAlchemy again.
PRELOAD = ["listener.server"]
#: How long a new receiving process may take to bind the port.
START_TIMEOUT_S = 60.0
#: Wait before a receiving process that died or failed at start-up is started again, from its
#: second failure in a row on; doubles with each failure, up to RESTART_BACKOFF_MAX_S.
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 60.0
#: A receiving process that served this long before it died starts a new run of failures
#: (restarted at once); one that died sooner counts as one more failure in a row.
HEALTHY_AFTER_S = RESTART_BACKOFF_MAX_S
#: How long a receiving process may take to commit its queued records when stopped.
STOP_TIMEOUT_S = 15.0
#: Asks a receiving process to commit its queued records and answer when done: it receives
#: ``(FLUSH, number)`` and answers ``(number, committed)`` (see ReceiverGroup.flush()).
FLUSH = "flush"


class ReceiverStartError(RuntimeError):
    """A receiving process did not start; the message says why."""


@dataclass
class _Child:
    process: BaseProcess
    connection: Connection
    slot: int
    serving_since: float
    """When it began to serve (``time.monotonic()``)."""


class ReceiverGroup:
    """``count`` child processes running ``target(*args, slot, connection)``, kept alive.

    Children are numbered 1 to ``count`` (``slot``); a restarted child takes its slot over.

    ``target`` must send one message on its connection once it serves; answer each
    :data:`FLUSH` once its queued records are committed; and return when it receives anything
    else (or the connection closes because this process died).
    """

    def __init__(
        self,
        *,
        count: int,
        target: Callable[..., None],
        args: tuple[Any, ...],
        on_death: Callable[[int, int], object],
    ) -> None:
        """Prepare the group; ``on_death(pid, slot)`` runs here after a child dies."""
        self._count = count
        self._target = target
        self._args = args
        self._on_death = on_death
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._talk = threading.Lock()  # one conversation at a time on the connections
        self._flushes = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    def start(self) -> None:
        """Start every child and wait until each serves, then watch them.

        Raises:
            ReceiverStartError: A child died or did not answer in time.
        """
        for slot in range(1, self._count + 1):
            self._children.append(self._spawn(slot))
        self._watcher = threading.Thread(target=self._watch, name="receiver-watch", daemon=True)
        self._watcher.start()

    def pids(self) -> list[int]:
        """The process ids of the live children."""
        with self._lock:
            return [c.process.pid for c in self._children if c.process.pid is not None]

    def flush(self, timeout_s: float) -> bool:
        """Wait until every child has committed the records it queued before this call.

        A child that dies meanwhile counts as flushed: its files are recorded by ``on_death``.

        Returns:
            False if a child did not answer within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        with self._talk:
            with self._lock:
                children = list(self._children)
            self._flushes += 1
            request = (FLUSH, self._flushes)
            asked = []
            for child in children:
                with contextlib.suppress(OSError, ValueError):
                    child.connection.send(request)
                    asked.append(child)
            flushed = True
            for child in asked:
                try:
                    flushed = self._flushed(child, self._flushes, deadline) and flushed
                except (EOFError, OSError, ValueError):
                    continue
        if not flushed:
            log.warning("A receiving process did not commit its records within %.0f s", timeout_s)
        return flushed

    @staticmethod
    def _flushed(child: _Child, number: int, deadline: float) -> bool:
        # Answers to earlier requests that timed out may come first: skip them.
        while child.connection.poll(max(0.0, deadline - time.monotonic())):
            answered, committed = child.connection.recv()
            if answered == number:
                return bool(committed)
        return False

    def stop(self) -> None:
        """Ask every child to stop (they commit their queued records), then reap them."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(5.0)
        with self._lock:
            children = list(self._children)
        with self._talk:
            for child in children:
                with contextlib.suppress(OSError, ValueError):
                    child.connection.send(("stop", 0))
        for child in children:
            child.process.join(STOP_TIMEOUT_S)
            if child.process.is_alive():
                log.warning("Receiving process %s did not stop; killing it", child.process.pid)
                child.process.kill()
                child.process.join(5.0)
            child.connection.close()

    def _spawn(self, slot: int) -> _Child:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=self._target,
            args=(*self._args, slot, theirs),
            name="dicom-receiver",
            daemon=True,
        )
        process.start()
        theirs.close()
        if not ours.poll(START_TIMEOUT_S):
            process.kill()
            raise ReceiverStartError(
                f"Receiving process {process.pid} did not start within {START_TIMEOUT_S:.0f} s."
            )
        try:
            ours.recv()
        except EOFError:
            process.join(5.0)
            raise ReceiverStartError(
                f"Receiving process {process.pid} exited at start-up "
                f"(exit code {process.exitcode}); see its log."
            ) from None
        log.info("Receiving process %s serves", process.pid)
        return _Child(process=process, connection=ours, slot=slot, serving_since=time.monotonic())

    def _watch(self) -> None:
        """Reap dead children (``on_death`` once each) and restart them, with backoff.

        Each slot counts its failures in a row: deaths and failed start-ups alike. The first
        restart is immediate; the next ones wait 1 s, 2 s, 4 s ... up to
        :data:`RESTART_BACKOFF_MAX_S`, so a child that crashes on its first association (or
        runs out of memory) is not restarted, and its files recovered, in a loop. A child that
        served :data:`HEALTHY_AFTER_S` before it died starts the count again.
        """
        failures: dict[int, int] = {}  # slot -> failures in a row
        retries: dict[int, float] = {}  # slot -> when to start it again
        while not self._stopping.is_set():
            with self._lock:
                sentinels = {c.process.sentinel: c for c in self._children}
            due = min(retries.values(), default=None)
            timeout = 0.5 if due is None else min(0.5, max(0.0, due - time.monotonic()))
            ready = wait(list(sentinels), timeout=timeout)
            if self._stopping.is_set():
                return
            for sentinel in ready:
                dead = sentinels[cast(int, sentinel)]
                if time.monotonic() - dead.serving_since >= HEALTHY_AFTER_S:
                    failures[dead.slot] = 0
                delay = self._failed(dead.slot, failures)
                self._reap(
                    dead, f"failure {failures[dead.slot]} in a row; restart in {delay:.0f} s"
                )
                retries[dead.slot] = time.monotonic() + delay
            for slot, when in sorted(retries.items()):
                if when > time.monotonic() or self._stopping.is_set():
                    continue
                try:
                    child = self._spawn(slot)
                except ReceiverStartError as exc:
                    delay = self._failed(slot, failures)
                    retries[slot] = time.monotonic() + delay
                    log.error("%s Trying again in %.0f s.", exc, delay)
                    continue
                del retries[slot]
                with self._lock:
                    self._children.append(child)
                    self.restarts += 1

    @staticmethod
    def _failed(slot: int, failures: dict[int, int]) -> float:
        """Count one more failure of ``slot`` in a row; return how long to wait before a start."""
        count = failures.get(slot, 0)
        failures[slot] = count + 1
        if count == 0:
            return 0.0
        return min(RESTART_BACKOFF_S * 2.0 ** (count - 1), RESTART_BACKOFF_MAX_S)

    def _reap(self, dead: _Child, restart: str) -> None:
        """Forget a dead child and run ``on_death`` for it (its files are recovered)."""
        dead.process.join()
        with self._talk:
            dead.connection.close()
        with self._lock:
            self._children.remove(dead)
        pid = dead.process.pid
        log.error(
            "Receiving process %s died (exit code %s; %s)", pid, dead.process.exitcode, restart
        )
        try:
            if pid is not None:
                self._on_death(pid, dead.slot)
        except Exception:  # recovery must not stop the restart
            log.exception("Recovery after receiving process %s failed", pid)
