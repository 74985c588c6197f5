"""Decides when a study is complete, records its one job in the outbox, then queues it.

A series is quiet after a quiet period with no new instance (per calling AE), or when it has
been arriving for longer than the forced cut-off; a study is judged once every series it is
receiving is quiet. Of its series, the one the model was made for gets the job
(:mod:`listener.study`). The job is committed to the
database before the task is published, so a broker outage loses nothing: the reconciler
publishes whatever is still pending once the broker is back.

The database, not the broker, is the source of truth for work in flight: a queued job holds a
lease (``queued_lease_s``) and a running one a lease its worker renews. The reconciler also
publishes every queued or started job whose lease expired (the broker lost the message, or
the worker died), and fails a job for good once its worker was lost ``job_max_attempts``
times.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pydicom

import db.jobs
import db.leases
import db.receiving
import listener.metrics
from db.clock import as_utc, utcnow
from db.engine import Session, SessionFactory
from db.enums import ProcessKind
from db.heartbeats import HeartbeatWriter
from db.rows import Series
from listener.config import DEFAULT_MODEL_SLICE_THICKNESS_MM, ListenerConfig
from listener.errors import DispatchError
from listener.interruptions import QuietPeriods
from listener.publish import JobPublisher
from listener.resources import free_disk_mb
from listener.study import StudyRules, judge_study

log = logging.getLogger(__name__)

#: The shortest sleep between two passes of the monitor thread, so that it never busy-loops.
MIN_WAIT_S = 0.01
#: Added to the wait for the earliest due series, so that the pass finds it due, not nearly due.
DUE_MARGIN_S = 0.002


class CompletionMonitor:
    """Judges quiet series complete and keeps the outbox drained."""

    def __init__(
        self,
        *,
        config: ListenerConfig,
        session_factory: SessionFactory,
        storage_dir: Path,
        publisher: JobPublisher,
        before_judging: Callable[[], object] | None = None,
        quiet_periods: QuietPeriods | None = None,
        model_slice_thickness_mm: float = DEFAULT_MODEL_SLICE_THICKNESS_MM,
    ) -> None:
        """Create the monitor; ``before_judging`` runs first in each pass (flush the records).

        ``quiet_periods`` says when each series' quiet period starts; by default no earlier
        than now, so that series left receiving by a crash are not judged at once.
        ``model_slice_thickness_mm`` is the thickness the model was made for (its spec's): the
        series of a study nearest to it is chosen.
        """
        self._config = config
        self._rules = StudyRules(
            min_slices=config.min_slices,
            model_thickness_mm=model_slice_thickness_mm,
            site_kernels=config.kernel_families,
        )
        self._quiet_periods = quiet_periods or QuietPeriods()
        self._before_judging = before_judging
        self._sessions = session_factory
        self._storage_dir = storage_dir
        self._publisher = publisher
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_reconcile = 0.0
        self._next_due: datetime | None = None
        # The console's health page reads it: this (leading) listener is up, and its disk.
        self._heartbeat = HeartbeatWriter(
            session_factory, kind=ProcessKind.LISTENER, details=self._heartbeat_details
        )

    @property
    def quiet_periods(self) -> QuietPeriods:
        """When each series' quiet period starts (restarted after a crash or an abort)."""
        return self._quiet_periods

    # One pass --------------------------------------------------------------------------

    def judge_quiet_series(self, now: datetime | None = None) -> list[int]:
        """Judge every study whose receiving series are all quiet (or overdue); return job ids.

        A study gets at most one new job: for the series the model reads (:mod:`listener.study`).
        """
        if self._before_judging is not None:
            self._before_judging()
        now = now or utcnow()
        job_ids: list[int] = []
        with self._sessions() as session:
            studies: dict[int, list[Series]] = {}
            for series in db.receiving.receiving_series(session=session):
                studies.setdefault(series.study_id, []).append(series)
            # A study is due when the last of its receiving series is.
            due_at = {
                study: max(self._due_at(series) for series in received)
                for study, received in studies.items()
            }
            self._next_due = min((at for at in due_at.values() if at > now), default=None)
            for study, received in studies.items():
                if due_at[study] <= now:
                    job_id = self._judge(session, received, now)
                    if job_id is not None:
                        job_ids.append(job_id)
        for job_id, series_uid in self._pending(job_ids):
            self._publish(job_id, series_uid)
        return job_ids

    def reconcile(self, now: datetime | None = None) -> int:
        """Publish jobs left in the outbox (the broker was down) and lost jobs.

        A queued or started job whose lease expired is lost: the broker dropped its message
        (a restart without persistence) or its worker died. It is published again, unless its
        worker was lost ``job_max_attempts`` times already: then it fails for good.

        Returns:
            How many jobs were published.
        """
        now = now or utcnow()
        older_than = now - timedelta(seconds=self._config.reconcile_interval_s)
        with self._sessions() as session:
            pending = [
                (job.id, job.series.series_instance_uid)
                for job in db.jobs.pending_jobs(session=session, older_than=older_than)
            ]
            lost = db.leases.lost_jobs(session=session, now=now)
        sent = 0
        for job_id, series_uid in pending:
            sent += self._publish(job_id, series_uid)
        if pending:
            log.info("Reconciler: %d of %d pending jobs published", sent, len(pending))
        again = 0
        for job in lost:
            if job.attempts >= self._config.job_max_attempts:
                self._give_up(job)
                continue
            log.warning(
                "Job %d (%s, %d attempts) lost its lease: publishing it again",
                job.job_id,
                job.status,
                job.attempts,
            )
            again += self._publish(job.job_id, job.series_instance_uid)
        if lost:
            log.info("Reconciler: %d of %d lost jobs published again", again, len(lost))
        return sent + again

    # Internals -------------------------------------------------------------------------

    def _quiet_since(self, series: Series) -> datetime:
        interrupted = series.interrupted_at
        return self._quiet_periods.quiet_since(
            series.series_instance_uid,
            as_utc(series.last_received_at),
            None if interrupted is None else as_utc(interrupted),
        )

    def _due_at(self, series: Series) -> datetime:
        """When the series will be due if nothing new arrives (its quiet period, or cut-off)."""
        quiet = self._config.quiet_period_for(series.calling_ae_title or "")
        return min(
            self._quiet_since(series) + timedelta(seconds=quiet),
            as_utc(series.first_received_at) + timedelta(seconds=self._config.max_series_wait_s),
        )

    def _cut_off(self, series: Series, now: datetime) -> bool:
        """Whether a series is judged by its cut-off, not after a quiet period."""
        quiet = self._config.quiet_period_for(series.calling_ae_title or "")
        return now - self._quiet_since(series) < timedelta(seconds=quiet)

    def _judge(self, session: Session, received: list[Series], now: datetime) -> int | None:
        for series in received:
            self._quiet_periods.forget(series.series_instance_uid)
            if self._cut_off(series, now):
                log.warning(
                    "Series %s still receiving after %.0f s: cut off at %d instances",
                    series.series_instance_uid,
                    self._config.max_series_wait_s,
                    series.instance_count,
                )
        job = judge_study(
            session, received, rules=self._rules, read_header=self._read_header, now=now
        )
        if job is None:
            return None
        listener.metrics.series_completed()
        log.info(
            "Series %s complete with %d instances: job %d in outbox (%s)",
            job.series.series_instance_uid,
            job.instance_count,
            job.id,
            job.series.choice_reason,
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
        except Exception as exc:  # checked on arrival; a file damaged since is left out
            log.warning("Cannot read stored instance %s: %s", relpath, type(exc).__name__)
            return None

    def _give_up(self, job: db.leases.LostJob) -> None:
        error = (
            f"Its worker was lost {job.attempts} times (killed, out of memory, or gone); "
            f"the job is not retried again (job_max_attempts = {self._config.job_max_attempts})."
        )
        with self._sessions() as session:
            db.jobs.fail_job(session=session, job_id=job.job_id, error=error, final=True)
            session.commit()

    def _publish(self, job_id: int, series_uid: str) -> int:
        try:
            self._publisher.publish(job_id=job_id, series_instance_uid=series_uid)
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
            self._heartbeat.stopped()

    def seconds_to_next_pass(self, now: datetime | None = None) -> float:
        """How long the thread sleeps before its next pass.

        Until the earliest moment a series seen in the last pass becomes due (its quiet period
        ends, or its cut-off), so that a series is judged as soon as it is quiet rather than
        up to ``check_interval_s`` later; never longer than ``check_interval_s`` (new series,
        the outbox) and never shorter than :data:`MIN_WAIT_S` (no busy loop).
        """
        wait = self._config.check_interval_s
        if self._next_due is not None:
            until_due = (self._next_due - (now or utcnow())).total_seconds() + DUE_MARGIN_S
            wait = min(wait, until_due)
        return max(wait, MIN_WAIT_S)

    def _run(self) -> None:
        import time

        while not self._stop.wait(self.seconds_to_next_pass()):
            try:
                self.judge_quiet_series()
                if time.monotonic() - self._last_reconcile >= self._config.reconcile_interval_s:
                    self._last_reconcile = time.monotonic()
                    self.reconcile()
            except Exception:  # the monitor must outlive any one bad pass
                log.exception("Completion check failed; retrying on the next pass")
            self._heartbeat.beat_if_due()

    def _heartbeat_details(self) -> dict[str, object]:
        config = self._config
        return {
            "ae_title": config.ae_title,
            "port": config.port,
            "processes": config.receiving_processes,
            "free_disk_mb": round(free_disk_mb(self._storage_dir), 1),
            "min_free_disk_mb": config.min_free_disk_mb,
        }
