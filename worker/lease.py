"""The lease a worker holds on the job it runs, renewed by a heartbeat thread.

The database, not the broker, says whether a job is still being worked on: a task takes the
job's lease before it runs it and renews it every ``job_heartbeat_interval_s``. When the
worker dies (SIGKILL, out of memory, the host goes away), the lease runs out after
``job_lease_s`` and the listener's reconciler publishes the job again; idempotency makes the
second run safe.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import db.jobs
import db.leases
from db.engine import SessionFactory

log = logging.getLogger(__name__)


class LeaseNotTakenError(Exception):
    """Another task holds the job (this delivery is a stale copy), or the job must not run."""


class JobLease:
    """Holds the lease of one job while its task runs (a context manager).

    Entering takes the lease (:func:`db.leases.take_lease`) and starts the heartbeat; leaving
    stops it and releases the lease, or keeps it for ``hold_s`` when the task will be retried.
    """

    def __init__(
        self,
        sessions: SessionFactory,
        *,
        job_id: int,
        task_id: str,
        lease_s: float,
        interval_s: float,
        worker: str | None = None,
    ) -> None:
        """Prepare the lease; nothing is written before ``__enter__``."""
        self._sessions = sessions
        self.job_id = job_id
        self.task_id = task_id
        self._lease_s = lease_s
        self._interval_s = interval_s
        self._worker = worker
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._taken = False
        self.hold_s: float | None = None
        """Set before leaving to keep the lease this long (a retry follows)."""

    def take(self) -> None:
        """Take the lease (one transaction).

        Raises:
            LeaseNotTakenError: Another task holds the job, or the job must not run again.
            DatabaseUnavailableError: The database is away (worth a retry).
        """
        with self._sessions() as session:
            refusal = db.leases.take_lease(
                session=session,
                job_id=self.job_id,
                task_id=self.task_id,
                lease_s=self._lease_s,
                worker=self._worker,
            )
            session.commit()
        if refusal is not None:
            raise LeaseNotTakenError(refusal)
        self._taken = True

    def __enter__(self) -> JobLease:
        """Take the lease unless :meth:`take` did, and start the heartbeat.

        Raises:
            LeaseNotTakenError: Another task holds the job, or the job must not run again.
        """
        if not self._taken:
            self.take()
        self._thread = threading.Thread(
            target=self._beat, name=f"lease-job-{self.job_id}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the heartbeat and release (or keep) the lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._interval_s + 5.0)
        try:
            with self._sessions() as session:
                db.leases.release_lease(
                    session=session, job_id=self.job_id, task_id=self.task_id, hold_s=self.hold_s
                )
                session.commit()
        except Exception:  # the lease then expires on its own; the job is published again
            log.exception("Could not release the lease of job %d", self.job_id)

    def renew(self) -> bool:
        """Renew the lease once; False when this task no longer holds the job."""
        with self._sessions() as session:
            held = db.leases.renew_lease(
                session=session, job_id=self.job_id, task_id=self.task_id, lease_s=self._lease_s
            )
            session.commit()
        return held

    def _beat(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                held = self.renew()
            except Exception:  # the database may be away for a while; try again
                log.exception("Could not renew the lease of job %d", self.job_id)
                continue
            if not held:
                # Another task took the job (this one's lease ran out) or the job moved on:
                # both runs are idempotent, but two at once means the lease is too short.
                log.warning(
                    "Job %d is no longer held by task %s; its heartbeat stops",
                    self.job_id,
                    self.task_id,
                )
                return
