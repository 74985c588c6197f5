"""Records stored instances in the database in batches, from one thread.

A C-STORE is answered once its file is durable; its database record follows within
milliseconds, batched with whatever else arrived meanwhile (one transaction instead of one per
instance). If the process dies in between, :func:`listener.recovery.record_unrecorded` finds the
file at the next start. A database outage only delays the records: they are kept and retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import db.receiving
from db.engine import SessionFactory
from db.errors import DatabaseAccessError
from listener.inspection import ReceivedInstance

log = logging.getLogger(__name__)

#: Most instances per transaction.
MAX_BATCH = 500
#: How long the writer waits after a first record for others to join its transaction. A
#: commit costs about 4 ms of CPU (and of the GIL the receivers need) plus 0.13 ms per record
#: (SQLite, one series): at 50 ms, 0.6-0.8 ms per image while receiving; at 0.2 s, about 0.3.
#: Nothing waits for it: the completion monitor flushes before it judges (no wait), files are
#: on disk before success, and a crash's unrecorded files are recorded at start-up.
BATCH_WINDOW_S = 0.2
#: Wait before retrying after a database error.
RETRY_DELAY_S = 1.0


@dataclass(frozen=True)
class PendingRecord:
    """One stored instance waiting for its database row."""

    instance: ReceivedInstance
    calling_ae_title: str
    record: db.receiving.InstanceRecord


def commit_records(session_factory: SessionFactory, pending: list[PendingRecord]) -> None:
    """Record instances in one transaction, one ``record_instances`` call per series."""
    by_series: dict[str, list[PendingRecord]] = defaultdict(list)
    for item in pending:
        by_series[item.instance.series_instance_uid].append(item)
    with session_factory() as session:
        for series_uid, items in by_series.items():
            first = items[0]
            db.receiving.record_instances(
                session=session,
                study_instance_uid=first.instance.study_instance_uid,
                series_instance_uid=series_uid,
                modality=first.instance.modality,
                series_description=first.instance.series_description,
                calling_ae_title=first.calling_ae_title,
                instances=[item.record for item in items],
            )
        session.commit()


class InstanceRecorder:
    """A single writer thread that commits instance records in batches."""

    def __init__(
        self, *, session_factory: SessionFactory, batch_window_s: float = BATCH_WINDOW_S
    ) -> None:
        """Create the recorder; it waits ``batch_window_s`` after a first record for others.

        A :meth:`flush` (or :meth:`stop`) ends the wait at once.
        """
        self._sessions = session_factory
        self._batch_window_s = batch_window_s
        self._queue: list[PendingRecord] = []
        self._condition = threading.Condition()
        self._submitted = 0
        self._committed = 0
        self._stopping = False
        self._urgent = False  # a flush is waiting: commit without waiting for the window
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="instance-recorder", daemon=True)
        self._thread.start()

    def submit(self, item: PendingRecord) -> int:
        """Queue one record; return its ticket for :meth:`wait_for`."""
        with self._condition:
            self._queue.append(item)
            self._submitted += 1
            self._condition.notify_all()
            return self._submitted

    def wait_for(self, ticket: int, timeout_s: float | None = None) -> bool:
        """Wait until the record with this ticket (and all before it) is committed."""
        with self._condition:
            return self._condition.wait_for(lambda: self._committed >= ticket, timeout_s)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Commit everything submitted so far now, and wait for it; False on timeout."""
        with self._condition:
            ticket = self._submitted
            self._urgent = True
            self._condition.notify_all()
        return self.wait_for(ticket, timeout_s)

    @property
    def backlog(self) -> int:
        """Records submitted but not yet committed."""
        with self._condition:
            return self._submitted - self._committed

    def stop(self, timeout_s: float = 10.0) -> None:
        """Commit what is queued, then stop the thread."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: bool(self._queue) or self._stopping)
                if not self._queue and self._stopping:
                    return
                # Fewer, larger transactions leave the CPU (and the GIL) to the receivers.
                self._condition.wait_for(
                    lambda: self._stopping or self._urgent, self._batch_window_s
                )
                self._urgent = False
                batch = self._queue[:MAX_BATCH]
            try:
                commit_records(self._sessions, batch)
            except DatabaseAccessError as exc:
                log.error(
                    "Could not record %d stored instances (kept, retrying): %s", len(batch), exc
                )
                if self._stopping:
                    return
                time.sleep(RETRY_DELAY_S)
                continue
            with self._condition:
                del self._queue[: len(batch)]
                self._committed += len(batch)
                self._condition.notify_all()
            log.debug("Recorded %d instances", len(batch))
