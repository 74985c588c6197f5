"""The persisted export outbox: queue reports for each destination, claim, send, record.

Every object to send is an ``exports`` row first. A sender claims a row (so that two workers
never send it at once), sends it, and records the outcome; a failure schedules the next try
with exponential backoff, and after ``export_max_attempts`` failures the row is a dead letter.
Deterministic SOP Instance UIDs and one row per result, kind and destination mean a retry can
never put a second copy into the PACS.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom

import db.exports
import db.jobs
import worker.metrics
from db.engine import Session, SessionFactory
from db.enums import ExportKind, ExportStatus
from db.errors import JobStateError
from dicom_edge import PacsDestination
from worker.config import WorkerConfig
from worker.dicomweb import stow
from worker.errors import ErrorCode, ExportError, WorkerError, error_detail, public_error
from worker.export import send_datasets
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
    sha256: str | None = None
    """Of the file as written (None: not known)."""
    size_bytes: int | None = None

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
                sha256=output.sha256,
                size_bytes=output.size_bytes,
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
    sha256: str | None = None
    """Of the file as the worker wrote it (None for exports made before revision 0014)."""
    size_bytes: int | None = None


def claim(session: Session, *, export_id: int) -> Claim | None:
    """Claim one export in the caller's transaction; None if it is not due or already held."""
    if not db.exports.claim_export(session=session, export_id=export_id, lease_s=CLAIM_LEASE_S):
        return None
    export = db.exports.get_export(session=session, export_id=export_id)
    return Claim(
        export_id,
        Path(export.path),
        export.destination,
        export.sop_instance_uid,
        sha256=export.sha256,
        size_bytes=export.size_bytes,
    )


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

    Any failure of this one row (unreachable, refused, a missing or unreadable file, or an
    error nobody foresaw) is a failed attempt with its code and our message: it backs off and
    becomes a dead letter after ``export_max_attempts``, and never stops the caller's sweep.
    When the last export of a result is sent, its job is finished (``exported_at``).

    Returns:
        True if sent; False if the send failed (then it is rescheduled or dead).
    """
    export_id, uid = claimed.export_id, claimed.sop_instance_uid
    try:
        output = read_output(
            claimed.path, uid, sha256=claimed.sha256, size_bytes=claimed.size_bytes
        )
        _send(output, claimed.destination, config=config)
    except Exception as exc:
        error = public_error(exc)
        if isinstance(exc, WorkerError):
            log.warning("Export %d of %s failed: %s", export_id, uid, error_detail(exc))
        else:
            log.exception("Export %d of %s failed unexpectedly", export_id, uid)
        with sessions() as session:
            db.exports.mark_export_failed(
                session=session,
                export_id=export_id,
                error=str(error),
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


@dataclass(frozen=True)
class StoredOutput:
    """An output file as stored (its bytes, for STOW-RS) and as read (for C-STORE)."""

    raw: bytes
    dataset: pydicom.Dataset


def read_output(
    path: Path,
    sop_instance_uid: str,
    *,
    sha256: str | None = None,
    size_bytes: int | None = None,
) -> StoredOutput:
    """Read an output file and check it is the DICOM object it is named after, as written.

    Args:
        path: The file.
        sop_instance_uid: The object it must hold.
        sha256: The file's sha256 when the worker wrote it; None skips the check.
        size_bytes: Its size then; None skips the check.

    Raises:
        ExportError: The file is missing, changed or truncated since it was written, or is
            not readable DICOM of that SOP Instance UID (empty, truncated before its identity,
            or another object).
    """
    if not path.is_file():
        raise ExportError(
            f"The file {path} of instance {sop_instance_uid} is missing.",
            code=ErrorCode.FILE_MISSING,
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ExportError(
            f"The file {path} of instance {sop_instance_uid} cannot be read; it is not sent.",
            code=ErrorCode.FILE_UNREADABLE,
            detail=error_detail(exc),
        ) from exc
    if size_bytes is not None and len(raw) != size_bytes:
        raise ExportError(
            f"The file {path} of instance {sop_instance_uid} is {len(raw)} bytes, not the "
            f"{size_bytes} written (truncated or changed since); it is not sent.",
            code=ErrorCode.FILE_CHANGED,
        )
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise ExportError(
            f"The file {path} of instance {sop_instance_uid} changed since it was written "
            "(its sha256 differs); it is not sent.",
            code=ErrorCode.FILE_CHANGED,
        )
    try:
        dataset = pydicom.dcmread(BytesIO(raw))
        found = str(dataset.SOPInstanceUID)
        str(dataset.StudyInstanceUID)  # STOW-RS names the study; C-STORE needs it too
    except Exception as exc:
        # pydicom raises InvalidDicomError, AttributeError, ValueError or EOFError here.
        raise ExportError(
            f"The file {path} of instance {sop_instance_uid} is not readable DICOM (empty, "
            "truncated or damaged); it is not sent.",
            code=ErrorCode.FILE_UNREADABLE,
            detail=error_detail(exc),
        ) from exc
    if found != sop_instance_uid:
        raise ExportError(
            f"The file {path} holds instance {found}, not {sop_instance_uid}; it is not sent.",
            code=ErrorCode.FILE_UNREADABLE,
        )
    return StoredOutput(raw, dataset)


def _send(output: StoredOutput, destination: str, *, config: WorkerConfig) -> None:
    """C-STORE to ``AE@host:port``, or STOW-RS to a configured DICOMweb base URL."""
    if destination.startswith(("http://", "https://")):
        for server in config.dicomweb:
            if server.url == destination:
                stow(
                    parts=[output.raw],
                    study_instance_uid=str(output.dataset.StudyInstanceUID),
                    destination=server,
                )
                return
        raise ExportError(
            f"The DICOMweb destination {destination} is no longer configured.",
            code=ErrorCode.NOT_CONFIGURED,
        )
    send_datasets(
        datasets=[output.dataset],
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
