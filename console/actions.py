"""Admin actions (re-queue a job, re-send an export or a notification), each audited.

The console's API and dashboard and the CLI's ``requeue`` and ``retry-export`` all act here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import db.audit
import db.exports
import db.jobs
import db.notifications
from console.auth import Principal
from console.config import ConsoleRuntime
from db.engine import Session, SessionFactory
from db.enums import JobStatus
from db.errors import DbError, NotFoundError
from listener.errors import DispatchError
from listener.publish import JobPublisher

log = logging.getLogger(__name__)

#: Opens a publisher for one admin action: a short-lived broker connection, closed after it.
OpenPublisher = Callable[[], JobPublisher]


@dataclass(frozen=True)
class Outcome:
    """How an admin action ended: ``ok``, ``not_found``, ``refused`` or ``error``."""

    result: str
    detail: str

    @property
    def ok(self) -> bool:
        """Whether the action was done."""
        return self.result == "ok"


#: The job states from which an admin may re-queue: the job is over and no worker holds it.
#: A re-queued job starts again at attempt 0, so a job that is still queued, running or
#: exporting is never re-queued (that would also reset its count of lost workers).
REQUEUEABLE = frozenset({JobStatus.FAILED, JobStatus.SKIPPED})

#: Why each other state cannot be re-queued, and what to do instead.
_NOT_REQUEUEABLE = {
    JobStatus.PENDING: "it is waiting to be sent to the workers",
    JobStatus.QUEUED: "it is on its way to a worker",
    JobStatus.STARTED: "a worker is running it",
    JobStatus.INFERRED: "its result is stored and its report is being sent",
    JobStatus.EXPORT_FAILED: "its result is stored but an export gave up: re-send the export "
    "instead (stroke-triage retry-export, or Re-send on the series page)",
    JobStatus.DONE: "its report was delivered; send the series again from the PACS to "
    "classify it anew",
    JobStatus.SUPERSEDED: "a newer job of the same series replaced it",
}


def record(
    *, sessions: SessionFactory, actor: str, action: str, target: str, outcome: Outcome
) -> None:
    """Write one entry to the audit log (and the log)."""
    with sessions() as session:
        db.audit.record_action(
            session=session,
            actor=actor,
            action=action,
            target=target,
            result=outcome.result,
            detail=outcome.detail,
        )
        session.commit()
    log.info("Audited %s on %s by %s: %s.", action, target, actor, outcome.result)


def audit_refusal(*, sessions: SessionFactory, actor: str, action: str, target: str) -> None:
    """Audit an admin action refused because the caller lacks the admin scope."""
    outcome = Outcome("forbidden", "The token has no admin scope.")
    record(sessions=sessions, actor=actor, action=action, target=target, outcome=outcome)


def audit_search(*, sessions: SessionFactory, actor: Principal, where: str, found: int) -> None:
    """Audit a search (``series.search``): who, where, how many series it found, and whether the
    patient's name and ID were searched. Never the search text, which may name the patient."""
    searched = "patient name and ID searched" if actor.is_admin else "no patient data searched"
    outcome = Outcome("ok", f"{found} series found; {searched}.")
    record(
        sessions=sessions, actor=actor.name, action="series.search", target=where, outcome=outcome
    )


def _refused(exc: DbError) -> Outcome:
    """The outcome of an action the database refused: ``not_found``, or ``refused`` and why."""
    return Outcome("not_found" if isinstance(exc, NotFoundError) else "refused", str(exc))


def _requeue(session: Session, job_id: int) -> str:
    """Re-queue the job if its state allows it; return its series' UID.

    The state is read in the transaction that re-queues: a job leaves a re-queueable state
    only by being re-queued or superseded, and ``db.jobs.requeue_job`` checks the latter under
    the job's lock.

    Raises:
        NotFoundError: No such job.
        DbError: The job's state does not allow it.
    """
    status = db.jobs.get_job(session=session, job_id=job_id).status
    if status not in REQUEUEABLE:
        raise DbError(
            f"Job {job_id} is {status} and cannot be re-queued: {_NOT_REQUEUEABLE[status]}. "
            "Only a failed or skipped job can be re-queued."
        )
    job = db.jobs.requeue_job(session=session, job_id=job_id)
    return job.series.series_instance_uid


def requeue_job(
    *, sessions: SessionFactory, open_publisher: OpenPublisher, job_id: int, actor: str
) -> Outcome:
    """Put a failed or skipped job back in the outbox, publish it, and audit it.

    Returns:
        ``ok``; ``not_found``; ``refused`` for a job in any other state (the message says why).
    """
    try:
        with sessions() as session:
            series_uid = _requeue(session, job_id)
            session.commit()
    except DbError as exc:
        outcome = _refused(exc)
    else:
        try:
            with open_publisher() as publisher:
                task_id = publisher.publish(job_id=job_id, series_instance_uid=series_uid)
        except DispatchError as exc:
            # The job waits in the outbox; the listener's reconciler sends it later.
            outcome = Outcome(
                "ok", f"Job {job_id} is back in the outbox; the broker is down for now: {exc}"
            )
        else:
            outcome = Outcome("ok", f"Job {job_id} queued again as task {task_id}.")
    record(
        sessions=sessions,
        actor=actor,
        action="job.requeue",
        target=f"job {job_id}",
        outcome=outcome,
    )
    return outcome


def retry_outbox(
    *,
    sessions: SessionFactory,
    actor: str,
    export_ids: Sequence[int] = (),
    notification_ids: Sequence[int] = (),
) -> Outcome:
    """Put dead (or failed) exports and notifications back in the outbox: all, or none.

    One transaction: if one of them cannot be retried (unknown, or already sent), none is.
    Each one is audited, with the outcome of the whole.
    """
    targets = [f"export {i}" for i in export_ids] + [f"notification {i}" for i in notification_ids]
    try:
        with sessions() as session:
            for export_id in export_ids:
                db.exports.retry_export(session=session, export_id=export_id)
            for notification_id in notification_ids:
                db.notifications.retry_notification(
                    session=session, notification_id=notification_id
                )
            session.commit()
    except DbError as exc:
        outcome = _refused(exc)
    else:
        outcome = Outcome("ok", "Back in the outbox; a worker sends it soon.")
    for target in targets:
        action = f"{target.split()[0]}.retry"
        record(sessions=sessions, actor=actor, action=action, target=target, outcome=outcome)
    return outcome


def retry_export(*, sessions: SessionFactory, export_id: int, actor: str) -> Outcome:
    """Put a dead (or failed) export back in the outbox (a worker re-sends it), and audit it."""
    return retry_outbox(sessions=sessions, actor=actor, export_ids=[export_id])


def publisher_opener(runtime: ConsoleRuntime, sessions: SessionFactory) -> OpenPublisher:
    """Opens publishers to the runtime's broker and inference queue."""

    def open_publisher() -> JobPublisher:
        return JobPublisher(
            sessions=sessions,
            broker_url=runtime.broker_url,
            transport_options=runtime.broker_transport_options,
            queue=runtime.inference_queue,
            lease_s=runtime.queued_lease_s,
        )

    return open_publisher
