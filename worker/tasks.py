"""Celery tasks: ids in, one plain function does the work, failures become retries."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, Task

import db.jobs
import worker.metrics
from db.errors import DatabaseUnavailableError, JobStateError
from dicom_edge import PROCESS_SERIES_TASK
from worker.context import WorkerContext
from worker.errors import ExportError, error_detail, public_error
from worker.lease import JobLease, LeaseNotTakenError
from worker.pipeline import Outcome, process_series

log = logging.getLogger(__name__)

#: Errors worth another try: the PACS or the database may come back.
TRANSIENT_ERRORS = (ExportError, DatabaseUnavailableError, ConnectionError, TimeoutError)


def register_tasks(app: Celery, ctx: WorkerContext) -> None:
    """Register the tasks on ``app``, bound to this process's context."""

    @app.task(  # type: ignore[untyped-decorator]
        name=PROCESS_SERIES_TASK,
        bind=True,
        max_retries=ctx.config.task_max_retries,
        # Not shared: a shared task joins every Celery app created later in this process,
        # bound to the first app's context (its database, its model).
        shared=False,
    )
    def process_series_task(self: Task, *, job_id: int, series_instance_uid: str) -> dict[str, Any]:
        worker = f"{self.request.hostname or 'worker'} pid {os.getpid()}"
        lease = JobLease(
            ctx.sessions,
            job_id=job_id,
            task_id=str(self.request.id),
            lease_s=ctx.config.job_lease_s,
            interval_s=ctx.config.job_heartbeat_interval_s,
            worker=worker,
        )
        try:
            lease.take()
        except LeaseNotTakenError as exc:
            log.info("Job %d not run: %s", job_id, exc)
            return {"job_id": job_id, "skipped": str(exc)}
        except DatabaseUnavailableError as exc:
            if self.request.retries >= self.max_retries:
                raise
            countdown = ctx.config.task_retry_backoff_s * 2**self.request.retries
            raise self.retry(exc=exc, countdown=countdown) from exc
        with lease:
            return _run(self, ctx, lease, series_instance_uid=series_instance_uid)


def _run(
    task: Task, ctx: WorkerContext, lease: JobLease, *, series_instance_uid: str
) -> dict[str, Any]:
    """Run the pipeline under ``lease``; transient failures become retries."""
    job_id = lease.job_id
    try:
        outcome = process_series(
            ctx, job_id=job_id, series_instance_uid=series_instance_uid, worker=None
        )
    except JobStateError as exc:
        # The job moved on while we worked (superseded by a late instance): drop it.
        log.info("Job %d dropped: %s", job_id, exc)
        worker.metrics.job_outcome("dropped")
        return {"job_id": job_id, "skipped": str(exc)}
    except TRANSIENT_ERRORS as exc:
        final = task.request.retries >= task.max_retries
        _record_failure(ctx, job_id, exc, final=final)
        if final:
            log.error(
                "Job %d failed for good after %d tries: %s",
                job_id,
                task.request.retries + 1,
                exc,
            )
            raise
        countdown = ctx.config.task_retry_backoff_s * 2**task.request.retries
        # The retry comes back after the countdown: keep the job's lease until then.
        lease.hold_s = countdown + ctx.config.job_lease_s
        raise task.retry(exc=exc, countdown=countdown) from exc
    except Exception as exc:
        _record_failure(ctx, job_id, exc, final=True)
        log.exception("Job %d failed: %s", job_id, exc)
        raise
    worker.metrics.job_outcome("skipped" if outcome.skipped else "done")
    return _summary(outcome)


def _record_failure(ctx: WorkerContext, job_id: int, exc: BaseException, *, final: bool) -> None:
    """Store the failure's code and our message on the job; its own text goes to the log."""
    worker.metrics.job_outcome("failed" if final else "retry")
    log.info("Job %d failed: %s", job_id, error_detail(exc))
    try:
        with ctx.sessions() as session:
            db.jobs.fail_job(
                session=session, job_id=job_id, error=str(public_error(exc)), final=final
            )
            session.commit()
    except Exception:  # the database itself may be what failed
        log.exception("Could not record the failure of job %d", job_id)


def _summary(outcome: Outcome) -> dict[str, Any]:
    return {
        "job_id": outcome.job_id,
        "result_id": outcome.result_id,
        "suspected": outcome.suspected,
        "probability": outcome.probability,
        "report": str(outcome.report_path) if outcome.report_path else None,
        "skipped": outcome.skipped,
    }
