"""Admin actions (re-queue a job, re-send an export), each written to the audit log."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import db.audit
import db.exports
import db.jobs
from console.config import ConsoleRuntime
from db.engine import SessionFactory
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


def _audit(
    sessions: SessionFactory, actor: str, action: str, target: str, outcome: Outcome
) -> None:
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
    log.info("Admin action %s on %s by %s: %s.", action, target, actor, outcome.result)


def audit_refusal(*, sessions: SessionFactory, actor: str, action: str, target: str) -> None:
    """Audit an admin action refused because the caller lacks the admin scope."""
    _audit(sessions, actor, action, target, Outcome("forbidden", "The token has no admin scope."))


def requeue_job(
    *, sessions: SessionFactory, open_publisher: OpenPublisher, job_id: int, actor: str
) -> Outcome:
    """Put a job back in the outbox, publish it, and audit it."""
    try:
        with sessions() as session:
            job = db.jobs.requeue_job(session=session, job_id=job_id)
            series_uid = job.series.series_instance_uid
            session.commit()
    except NotFoundError as exc:
        outcome = Outcome("not_found", str(exc))
    except DbError as exc:
        outcome = Outcome("refused", str(exc))
    else:
        try:
            with open_publisher() as publisher:
                task_id = publisher.publish(job_id=job_id, series_instance_uid=series_uid)
        except DispatchError as exc:
            # The job waits in the outbox; the listener's reconciler sends it later.
            outcome = Outcome("ok", f"Back in the outbox; the broker is down for now: {exc}")
        else:
            outcome = Outcome("ok", f"Queued again as task {task_id}.")
    _audit(sessions, actor, "job.requeue", f"job {job_id}", outcome)
    return outcome


def retry_export(*, sessions: SessionFactory, export_id: int, actor: str) -> Outcome:
    """Put an export back in the outbox (a worker re-sends it), and audit it."""
    try:
        with sessions() as session:
            db.exports.retry_export(session=session, export_id=export_id)
            session.commit()
    except NotFoundError as exc:
        outcome = Outcome("not_found", str(exc))
    except DbError as exc:
        outcome = Outcome("refused", str(exc))
    else:
        outcome = Outcome("ok", "Back in the outbox; a worker sends it soon.")
    _audit(sessions, actor, "export.retry", f"export {export_id}", outcome)
    return outcome


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
