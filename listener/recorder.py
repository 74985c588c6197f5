"""Records stored instances in the database in batches, from one thread.

A C-STORE is answered once its file is durable; its database record follows within
milliseconds, batched with whatever else arrived meanwhile (one transaction instead of one per
instance). If the process dies in between, :func:`listener.recovery.record_unrecorded` finds the
file at the next start. A database outage only delays the records: they are kept and retried.
A record the database refuses for good (or any other error) is left out, logged with its file,
and never blocks those behind it; its file stays on disk, so the same start-up scan records it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import db.receiving
from db.engine import SessionFactory
from db.errors import TRANSIENT_DATABASE_ERRORS
from listener.inspection import ReceivedInstance

log = logging.getLogger(__name__)

#: Most instances per transaction.
MAX_BATCH = 500
#: How long the writer waits after a first record for others to join its transaction. A
#: commit costs about 2.5 ms of CPU (and of the GIL the receivers need), a record next to
#: nothing more (SQLite, one series, the rows in one executemany: benchmarks/recorder_commit.py):
#: at 0.2 s, about 0.1 ms per image while receiving. Nothing waits for it: the completion
#: monitor flushes before it judges (no wait), files are on disk before success, and a crash's
#: unrecorded files are recorded at start-up.
BATCH_WINDOW_S = 0.2
#: Wait before retrying after a database error.
RETRY_DELAY_S = 1.0


@dataclass(frozen=True)
class PendingRecord:
    """One stored instance waiting for its database row."""

    instance: ReceivedInstance
    calling_ae_title: str
    record: db.receiving.InstanceRecord


def commit_records(
    session_factory: SessionFactory, pending: list[PendingRecord]
) -> list[PendingRecord]:
    """Record instances in one transaction, one ``record_instances`` call per series.

    A record the database will never take (a permanent error, or any other exception) does not
    hold the others back: the batch is split in halves until the records at fault stand alone,
    and those are left out, each logged with its file. Their files are on disk; the start-up
    scan (:func:`listener.recovery.record_unrecorded`) records them again.

    Returns:
        The records left out (none when the whole batch was committed).

    Raises:
        db.errors.TRANSIENT_DATABASE_ERRORS: The database is away or busy (worth a retry of
            the batch; halves already committed are upserted again harmlessly).
    """
    try:
        _commit(session_factory, pending)
    except TRANSIENT_DATABASE_ERRORS:
        raise
    except Exception as exc:
        if len(pending) > 1:
            middle = len(pending) // 2
            return [
                *commit_records(session_factory, pending[:middle]),
                *commit_records(session_factory, pending[middle:]),
            ]
        (item,) = pending
        log.error(
            "Instance %s (%s) could not be recorded and is left to the start-up scan: %s",
            item.instance.sop_instance_uid,
            item.record.path,
            f"{type(exc).__name__}: {exc}",
        )
        return [item]
    return []


def _commit(session_factory: SessionFactory, pending: list[PendingRecord]) -> None:
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
        self._left_out: set[int] = set()  # tickets of records the database did not take
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
        """Wait until the record with this ticket (and all before it) is committed.

        Returns:
            False on timeout, or when the database did not take this record (left out).
        """
        with self._condition:
            done = self._condition.wait_for(lambda: self._committed >= ticket, timeout_s)
            return done and ticket not in self._left_out

    def refused(self, ticket: int) -> bool:
        """Whether the database did not take the record with this ticket (left out)."""
        with self._condition:
            return ticket in self._left_out

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
        # Nothing may end this thread while C-STOREs are answered: every error is handled.
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
                first_ticket = self._committed + 1
            try:
                left_out = commit_records(self._sessions, batch)
            except Exception as exc:  # the database is away or busy: keep the records, retry
                log.error(
                    "Could not record %d stored instances (kept, retrying): %s", len(batch), exc
                )
                if self._stopping:
                    return
                time.sleep(RETRY_DELAY_S)
                continue
            with self._condition:
                del self._queue[: len(batch)]
                rejected = {id(item) for item in left_out}
                self._left_out.update(
                    first_ticket + index for index, item in enumerate(batch) if id(item) in rejected
                )
                self._committed += len(batch)
                self._condition.notify_all()
            log.debug("Recorded %d instances", len(batch) - len(left_out))
