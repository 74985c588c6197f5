"""The persisted export outbox: queue reports for each destination, claim, send, record.

Every object to send is an ``exports`` row first. A sender claims a row (so that two workers
never send it at once), sends it, and records the outcome; a failure schedules the next try
with exponential backoff, and after ``export_max_attempts`` failures the row is a dead letter.
Deterministic SOP Instance UIDs and one row per result, kind and destination mean a retry can
never put a second copy into the PACS.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import db.exports
import db.jobs
import worker.metrics
from db.engine import Session, SessionFactory
from db.enums import ExportKind, ExportStatus
from db.errors import JobStateError
from dicom_edge import PacsDestination
from worker.config import WorkerConfig
from worker.dicomweb import stow
from worker.export import ExportError, send_datasets
from worker.notify.config import DicomWebDestination
from worker.notify.send import send_notifications

log = logging.getLogger(__name__)

CLAIM_LEASE_S = 120.0
"""How long a claim keeps other senders off an export; a crashed sender's claim then expires."""


@dataclass(frozen=True)
class OutputFile:
    """One DICOM object the worker made for a result."""

    kind: ExportKind
    path: Path

    @property
    def sop_instance_uid(self) -> str:
        """The object's SOP Instance UID (the file is named after it)."""
        return self.path.stem


def queue_exports(
    session: Session,
    *,
    result_id: int,
    outputs: Sequence[OutputFile],
    targets: Sequence[PacsDestination | DicomWebDestination],
) -> list[int]:
    """Put every output for every destination in the outbox (existing rows are kept).

    Returns:
        Ids of the exports not yet sent.
    """
    unsent: list[int] = []
    for target in targets:
        for output in outputs:
            export = db.exports.ensure_export(
                session=session,
                result_id=result_id,
                kind=output.kind,
                destination=str(target),
                sop_instance_uid=output.sop_instance_uid,
                path=str(output.path),
            )
            if export.status != ExportStatus.SENT:
                unsent.append(export.id)
    return unsent


def report_destinations(config: WorkerConfig) -> list[PacsDestination | DicomWebDestination]:
    """Where reports go: every PACS and DICOMweb server when live; in shadow mode only the
    PACS marked shadow."""
    if config.mode == "shadow":
        return [destination for destination in config.pacs if destination.shadow]
    return [*config.pacs, *config.dicomweb]


def export_outputs(
    sessions: SessionFactory,
    *,
    job_id: int,
    result_id: int,
    outputs: Sequence[OutputFile],
    config: WorkerConfig,
) -> None:
    """Queue the outputs for every destination and try each once now; the sweeper retries.

    Queueing and claiming share one transaction, so no sweeper takes an export this call is
    about to send. The job is finished (``exported_at``) once every export is sent, or at
    once when there is nothing (left) to send.
    """
    with sessions() as session:
        unsent = queue_exports(
            session, result_id=result_id, outputs=outputs, targets=report_destinations(config)
        )
        claims = [c for e in unsent if (c := claim(session, export_id=e)) is not None]
        if not unsent:
            worker.metrics.report_delivered(db.jobs.finish_job(session=session, job_id=job_id))
        session.commit()
    sent = sum(send_claimed(sessions, claimed, config=config) for claimed in claims)
    if unsent:
        _finish_or_warn(sessions, job_id=job_id, sent=sent, unsent=len(unsent))
    # The SR goes first; then the stroke team is told (the sweeper retries what fails).
    send_notifications(sessions, config=config, result_id=result_id)


def _finish_or_warn(sessions: SessionFactory, *, job_id: int, sent: int, unsent: int) -> None:
    if sent == unsent:
        # send_claimed() finished the job with the result's last export; this also covers
        # exports to destinations no longer configured.
        with sessions() as session:
            db.jobs.finish_job(session=session, job_id=job_id)
            session.commit()
    else:
        log.warning(
            "Job %d: %d of %d exports not sent yet; the outbox will retry them",
            job_id,
            unsent - sent,
            unsent,
        )


@dataclass(frozen=True)
class Claim:
    """An export this sender may send now (its claim holds for ``CLAIM_LEASE_S``)."""

    export_id: int
    path: Path
    destination: str
    sop_instance_uid: str


def claim(session: Session, *, export_id: int) -> Claim | None:
    """Claim one export in the caller's transaction; None if it is not due or already held."""
    if not db.exports.claim_export(session=session, export_id=export_id, lease_s=CLAIM_LEASE_S):
        return None
    export = db.exports.get_export(session=session, export_id=export_id)
    return Claim(export_id, Path(export.path), export.destination, export.sop_instance_uid)


def deliver(sessions: SessionFactory, *, export_id: int, config: WorkerConfig) -> bool:
    """Claim one export, send it, and record the outcome.

    Returns:
        True if the object was sent now; False if another sender holds it, it is not due, or
        the send failed (then it is rescheduled or dead).
    """
    with sessions() as session:
        claimed = claim(session, export_id=export_id)
        session.commit()
    return claimed is not None and send_claimed(sessions, claimed, config=config)


def send_claimed(sessions: SessionFactory, claimed: Claim, *, config: WorkerConfig) -> bool:
    """Send a claimed export and record the outcome (one transaction).

    When the last export of a result is sent, its job is finished (``exported_at``).

    Returns:
        True if sent; False if the send failed (then it is rescheduled or dead).
    """
    export_id, path, uid = claimed.export_id, claimed.path, claimed.sop_instance_uid
    try:
        if not path.is_file():
            raise ExportError(f"The file {path} of instance {uid} is missing.")
        _send(path, claimed.destination, config=config)
    except (ExportError, ValueError, OSError) as exc:
        with sessions() as session:
            db.exports.mark_export_failed(
                session=session,
                export_id=export_id,
                error=f"{type(exc).__name__}: {exc}",
                max_attempts=config.export_max_attempts,
                backoff_s=config.export_backoff_s,
            )
            session.commit()
        worker.metrics.export_attempt(sent=False)
        return False
    worker.metrics.export_attempt(sent=True)
    with sessions() as session:
        export = db.exports.mark_export_sent(session=session, export_id=export_id)
        log.info("Export %d: %s %s sent to %s", export_id, export.kind, uid, claimed.destination)
        _finish_if_all_sent(session, export.result_id)
        session.commit()
    return True


def _send(path: Path, destination: str, *, config: WorkerConfig) -> None:
    """C-STORE to ``AE@host:port``, or STOW-RS to a configured DICOMweb base URL."""
    if destination.startswith(("http://", "https://")):
        for server in config.dicomweb:
            if server.url == destination:
                stow(paths=[path], destination=server)
                return
        raise ExportError(f"The DICOMweb destination {destination} is no longer configured.")
    send_datasets(
        datasets=[path],
        destination=PacsDestination.parse(destination),
        calling_ae_title=config.calling_ae_title,
    )


def _finish_if_all_sent(session: Session, result_id: int) -> None:
    exports = db.exports.result_exports(session=session, result_id=result_id)
    if exports and all(export.status == ExportStatus.SENT for export in exports):
        job_id = exports[0].result.job_id
        try:
            worker.metrics.report_delivered(db.jobs.finish_job(session=session, job_id=job_id))
        except JobStateError as exc:
            log.info("Job %d not finished after its exports: %s", job_id, exc)


def sweep(sessions: SessionFactory, *, config: WorkerConfig, limit: int = 50) -> int:
    """Send the exports that are due: pending and unclaimed, or failed and past their backoff.

    Returns:
        How many were sent.
    """
    with sessions() as session:
        due = [export.id for export in db.exports.due_exports(session=session, limit=limit)]
        session.commit()
    sent = sum(deliver(sessions, export_id=export_id, config=config) for export_id in due)
    if due:
        log.info("Outbox sweep: %d of %d due exports sent", sent, len(due))
    return sent
