"""Decides when a series is complete, records it in the outbox, then queues it.

A series is complete after a quiet period with no new instance (per calling AE), or when
it has been arriving for longer than the forced cut-off. The job is committed to the
database before the task is published, so a broker outage loses nothing: the reconciler
publishes whatever is still pending once the broker is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom

import db.jobs
import db.receiving
from db.engine import Session, SessionFactory
from db.rows import Series
from listener.config import ListenerConfig
from listener.dispatch import TaskDispatcher
from listener.errors import DispatchError
from listener.selection import select_series

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def publish_job(
    *,
    dispatcher: TaskDispatcher,
    session_factory: SessionFactory,
    job_id: int,
    series_instance_uid: str,
) -> str:
    """Publish a job from the outbox to the broker and record it as queued.

    Returns:
        The id of the published task.

    Raises:
        DispatchError: The broker did not take it; the job stays in the outbox.
    """
    task_id = dispatcher.send(job_id=job_id, series_instance_uid=series_instance_uid)
    with session_factory() as session:
        db.jobs.mark_job_queued(session=session, job_id=job_id, task_id=task_id)
        session.commit()
    log.info("Job %d for series %s queued as task %s", job_id, series_instance_uid, task_id)
    return task_id


class CompletionMonitor:
    """Judges quiet series complete and keeps the outbox drained."""

    def __init__(
        self,
        *,
        config: ListenerConfig,
        session_factory: SessionFactory,
        storage_dir: Path,
        dispatcher: TaskDispatcher,
        before_judging: Callable[[], object] | None = None,
    ) -> None:
        """Create the monitor; ``before_judging`` runs first in each pass (flush the records)."""
        self._config = config
        self._before_judging = before_judging
        self._sessions = session_factory
        self._storage_dir = storage_dir
        self._dispatcher = dispatcher
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_reconcile = 0.0

    # One pass --------------------------------------------------------------------------

    def judge_quiet_series(self, now: datetime | None = None) -> list[int]:
        """Turn every quiet (or overdue) receiving series into a pending job; return job ids."""
        if self._before_judging is not None:
            self._before_judging()
        now = now or _utcnow()
        job_ids: list[int] = []
        with self._sessions() as session:
            receiving = db.receiving.receiving_series(session=session)
            due = [series for series in receiving if self._is_due(series, now)]
            for series in due:
                job_id = self._judge(session, series, now)
                if job_id is not None:
                    job_ids.append(job_id)
        for job_id, series_uid in self._pending(job_ids):
            self._publish(job_id, series_uid)
        return job_ids

    def reconcile(self, now: datetime | None = None) -> int:
        """Publish jobs left in the outbox (the broker was down); return how many went."""
        now = now or _utcnow()
        older_than = now - timedelta(seconds=self._config.reconcile_interval_s)
        with self._sessions() as session:
            pending = [
                (job.id, job.series.series_instance_uid)
                for job in db.jobs.pending_jobs(session=session, older_than=older_than)
            ]
        sent = 0
        for job_id, series_uid in pending:
            sent += self._publish(job_id, series_uid)
        if pending:
            log.info("Reconciler: %d of %d pending jobs published", sent, len(pending))
        return sent

    # Internals -------------------------------------------------------------------------

    def _is_due(self, series: Series, now: datetime) -> bool:
        quiet = self._config.quiet_period_for(series.calling_ae_title or "")
        last = _aware(series.last_received_at)
        first = _aware(series.first_received_at)
        if now - last >= timedelta(seconds=quiet):
            return True
        if now - first >= timedelta(seconds=self._config.max_series_wait_s):
            log.warning(
                "Series %s still receiving after %.0f s: cut off at %d instances",
                series.series_instance_uid,
                self._config.max_series_wait_s,
                series.instance_count,
            )
            return True
        return False

    def _judge(self, session: Session, series: Series, now: datetime) -> int | None:
        uid = series.series_instance_uid
        instances = db.receiving.series_instances(session=session, series_instance_uid=uid)
        header = self._read_header(instances[0].path) if instances else None
        if header is None:
            db.receiving.skip_series(
                session=session, series_instance_uid=uid, reason="no readable instance", now=now
            )
            session.commit()
            return None
        selection = select_series(
            header, instance_count=len(instances), min_slices=self._config.min_slices
        )
        if not selection.classify:
            db.receiving.skip_series(
                session=session, series_instance_uid=uid, reason=selection.reason, now=now
            )
            session.commit()
            log.info("Series %s skipped: %s (%d instances)", uid, selection.reason, len(instances))
            return None
        job = db.jobs.create_job(session=session, series_instance_uid=uid, now=now)
        session.commit()
        log.info(
            "Series %s complete with %d instances: job %d in outbox",
            uid,
            job.instance_count,
            job.id,
        )
        return job.id

    def _pending(self, job_ids: list[int]) -> list[tuple[int, str]]:
        if not job_ids:
            return []
        with self._sessions() as session:
            return [
                (job_id, db.jobs.get_job(session=session, job_id=job_id).series.series_instance_uid)
                for job_id in job_ids
            ]

    def _read_header(self, relpath: str) -> pydicom.Dataset | None:
        try:
            return pydicom.dcmread(self._storage_dir / relpath, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            log.warning("Cannot read stored instance %s: %s", relpath, exc)
            return None

    def _publish(self, job_id: int, series_uid: str) -> int:
        try:
            publish_job(
                dispatcher=self._dispatcher,
                session_factory=self._sessions,
                job_id=job_id,
                series_instance_uid=series_uid,
            )
        except DispatchError as exc:
            log.warning("%s", exc)
            return 0
        return 1

    # Thread ----------------------------------------------------------------------------

    def start(self) -> None:
        """Run the checks in a background thread until stop()."""
        self._thread = threading.Thread(target=self._run, name="completion-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the background thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        import time

        while not self._stop.wait(self._config.check_interval_s):
            try:
                self.judge_quiet_series()
                if time.monotonic() - self._last_reconcile >= self._config.reconcile_interval_s:
                    self._last_reconcile = time.monotonic()
                    self.reconcile()
            except Exception:  # the monitor must outlive any one bad pass
                log.exception("Completion check failed; retrying on the next pass")
