"""Write notification outbox rows: for a result (in its transaction) and for failures."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import db.notifications
import db.receiving
import db.results
import db.studies
from db.clock import utc
from db.engine import Session
from db.enums import ExportKind, JobStatus, NotificationChannel, NotificationEvent
from db.rows import Job, Result
from dicom_edge import CLASSIFIABLE_SOP_CLASSES
from worker.config import WorkerConfig
from worker.errors import PublicError
from worker.notify.config import NotificationDestination, Trigger
from worker.notify.message import (
    Failure,
    ResultFacts,
    Revision,
    build_payload,
    idempotency_key,
)

log = logging.getLogger(__name__)

FAILURE_WINDOW = timedelta(hours=24)
"""Failures older than this when first seen (before a destination existed) are not told."""


def station_name_of(datasets: Sequence[object]) -> str:
    """The Station Name (0008,1010) of the first dataset, or ``""``."""
    if not datasets:
        return ""
    return str(getattr(datasets[0], "StationName", "") or "")


def _event_of(result: Result) -> NotificationEvent:
    return NotificationEvent.SUSPECTED if result.suspected else NotificationEvent.NOT_SUSPECTED


def queue_result_notifications(
    session: Session,
    *,
    destinations: Sequence[NotificationDestination],
    storage_dir: Path,
    result: Result,
    station_name: str,
) -> int:
    """Put the notifications of a result in the outbox, in the caller's transaction.

    Returns:
        How many destinations want this result (rows that already existed included).
    """
    job = result.job
    series = job.series
    event = _event_of(result)
    # A revision goes wherever the report it revises went, whatever its own verdict: a team
    # paged for SUSPECTED hears that the study's report now says otherwise.
    told = (
        db.notifications.destinations_told(session=session, result_id=result.replaces_result_id)
        if result.replaces_result_id is not None
        else set()
    )
    wanted = [
        d
        for d in destinations
        if d.name in told
        or d.accepts(
            Trigger(event), calling_ae_title=series.calling_ae_title, station_name=station_name
        )
    ]
    if not wanted:
        return 0
    source = _first_instance_path(session, storage_dir, series.series_instance_uid)
    event_key = f"result:{result.id}"
    for destination in wanted:
        _enqueue(
            session,
            destination,
            job=job,
            result=result,
            event=event,
            event_key=event_key,
            source=source,
            reported_at=result.created_at,
        )
    log.info("Result %d: %d notification(s) in the outbox", result.id, len(wanted))
    return len(wanted)


def _first_instance_path(session: Session, storage_dir: Path, series_uid: str) -> str | None:
    for instance in db.receiving.series_instances(session=session, series_instance_uid=series_uid):
        if instance.sop_class_uid in CLASSIFIABLE_SOP_CLASSES:
            return str(storage_dir / instance.path)
    return None


def queue_failure_notifications(
    session: Session,
    *,
    destinations: Sequence[NotificationDestination],
    now: datetime | None = None,
    batch: int = 100,
    storage_dir: Path | None = None,
) -> int:
    """Put notifications of recent failures in the outbox: one per failed series' job.

    With ``storage_dir``, a failure without an SR names one of the series' stored instances,
    so that its message carries the accession number as the verdicts' messages do.

    A failure is a series that could not be classified, or whose report is a dead letter
    (however many of its objects died: one message). It is told to the destinations whose
    ``on`` lists ``failed`` and whose AE filter lets the series through. Idempotent (one row
    per job and destination), so the sweeper calls it every round; each call takes up to
    ``batch`` failures not yet told per destination, so a long outage is told in full.

    Returns:
        How many rows were written.
    """
    since = utc(now) - FAILURE_WINDOW
    count = 0
    for destination in destinations:
        if Trigger.FAILED not in destination.on:
            continue
        # The Station Name of a failed series is not known here: a station filter lets it pass.
        for job in db.notifications.unannounced_failures(
            session=session,
            destination=destination.name,
            since=since,
            calling_ae_titles=destination.calling_ae_titles,
            limit=batch,
        ):
            _queue_failure(session, destination, job, storage_dir=storage_dir)
            count += 1
    return count


def _queue_failure(
    session: Session, destination: NotificationDestination, job: Job, *, storage_dir: Path | None
) -> None:
    """Write the failure notification of one job to one destination, with its reason."""
    if job.status == JobStatus.EXPORT_FAILED:
        dead = db.notifications.dead_exports(session=session, job_id=job.id)
        result = dead[0].result if dead else db.results.get_result(session=session, job_id=job.id)
        error = PublicError.parse(dead[0].last_error) if dead else None
        places = sorted({export.destination for export in dead})
        kinds = sorted({export.kind.upper() for export in dead})
        failure = Failure.REPORT_NOT_DELIVERED
        reason = (
            f"The {' and '.join(kinds) or 'report'} could not be delivered to "
            f"{', '.join(places) or 'the PACS'}" + (f": {error.message}" if error else ".")
        )
        source = next((export.path for export in dead if export.kind == ExportKind.SR), None)
    elif (result := db.results.get_result(session=session, job_id=job.id)) is not None:
        # Classified, but its report could not be made or queued: the verdict stands.
        failure = Failure.REPORT_NOT_DELIVERED
        error = PublicError.parse(job.last_error)
        reason = "The report could not be made" + (f": {error.message}" if error else ".")
        source = _series_source(session, storage_dir, job)
    else:
        failure = Failure.NOT_CLASSIFIED
        error = PublicError.parse(job.last_error)
        reason = "The series could not be classified" + (f": {error.message}" if error else ".")
        source = _series_source(session, storage_dir, job)
    _enqueue(
        session,
        destination,
        job=job,
        result=result,
        event=NotificationEvent.FAILED,
        event_key=f"failed:job:{job.id}",
        source=source,
        failure=failure,
        error_code=error.code if error else None,
        reason=reason,
    )


def _series_source(session: Session, storage_dir: Path | None, job: Job) -> str | None:
    """A stored instance of the job's series to read its accession number from, or None."""
    if storage_dir is None:
        return None
    return _first_instance_path(session, storage_dir, job.series.series_instance_uid)


def _enqueue(
    session: Session,
    destination: NotificationDestination,
    *,
    job: Job,
    result: Result | None,
    event: NotificationEvent,
    event_key: str,
    source: str | None,
    reported_at: datetime | None = None,
    failure: Failure | None = None,
    error_code: str | None = None,
    reason: str | None = None,
) -> None:
    """Write (if new) the outbox row of one event to one destination, with its payload."""
    series = job.series
    verdict = result is not None and failure is None
    key = idempotency_key(
        event_key=event_key,
        destination=destination.name,
        series_instance_uid=series.series_instance_uid,
    )
    db.notifications.ensure_notification(
        session=session,
        job_id=job.id,
        result_id=result.id if result is not None else None,
        event=event,
        event_key=event_key,
        destination=destination.name,
        channel=NotificationChannel(destination.kind),
        idempotency_key=key,
        source_path=source,
        payload=build_payload(
            key=key,
            event=event,
            study_instance_uid=series.study.study_instance_uid,
            series_instance_uid=series.series_instance_uid,
            calling_ae_title=series.calling_ae_title,
            result=None if result is None else result_facts(result),
            received_at=series.last_received_at,
            reported_at=reported_at,
            failure=failure,
            error_code=error_code,
            reason=reason,
            result_id=result.id if verdict and result is not None else None,
            series_number=series.series_number,
            series_description=series.series_description,
            revises=_revision(session, result) if verdict and result is not None else None,
        ),
    )


def _revision(session: Session, result: Result) -> Revision | None:
    """The study's earlier report that ``result`` revises, or None for its first one."""
    if result.replaces_result_id is None:
        return None
    earlier = db.studies.get_report(session=session, result_id=result.replaces_result_id)
    return Revision(
        result_id=earlier.result_id,
        suspected=earlier.suspected,
        series_instance_uid=earlier.series_instance_uid,
        series_number=earlier.series_number,
        series_description=earlier.series_description,
        reported_at=earlier.created_at,
    )


def result_facts(result: Result) -> ResultFacts:
    """What a notification says of a stored result."""
    return ResultFacts(
        suspected=result.suspected,
        probability=result.probability,
        threshold=result.threshold,
        model_name=result.model_name,
        model_version=result.model_version,
        finding_name=result.finding_name,
        finding_meaning=result.finding_meaning,
        further_findings=tuple(
            (other.finding_name, other.finding_meaning, other.probability)
            for other in result.further_findings
        ),
    )


def notify_result(
    session: Session,
    *,
    config: WorkerConfig,
    storage_dir: Path,
    result: Result,
    datasets: Sequence[object],
) -> int:
    """Queue a result's notifications (none in shadow mode: shadow results are never sent)."""
    if config.mode == "shadow":
        return 0
    return queue_result_notifications(
        session,
        destinations=config.notifications,
        storage_dir=storage_dir,
        result=result,
        station_name=station_name_of(datasets),
    )
