"""What a notification says: the stored payload, and identifiers read from DICOM at send time."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pydicom
from pydicom.errors import InvalidDicomError

from db.enums import NotificationEvent

log = logging.getLogger(__name__)

CONTROL_ID_LENGTH = 20
"""HL7 v2.5.1 MSH-10 (Message Control ID, ST) holds at most 20 characters."""

VERDICTS = {True: "SUSPECTED", False: "NOT SUSPECTED"}
"""The clinical verdict of a result, as every channel words it."""


class Failure(StrEnum):
    """What went wrong with a series (an IT event, told apart from the clinical verdict)."""

    NOT_CLASSIFIED = "not_classified"
    """The series could not be classified: there is no verdict."""
    REPORT_NOT_DELIVERED = "report_not_delivered"
    """The verdict stands, but its SR (or SC) could not be delivered to the PACS."""


HEADLINE_FAILURES = {
    Failure.NOT_CLASSIFIED: "SERIES NOT CLASSIFIED",
    Failure.REPORT_NOT_DELIVERED: "REPORT NOT DELIVERED",
}


def idempotency_key(*, event_key: str, destination: str, series_instance_uid: str) -> str:
    """A key that names one event at one destination, short enough for HL7 MSH-10."""
    text = f"{series_instance_uid}|{event_key}|{destination}"
    return hashlib.sha256(text.encode()).hexdigest()[:CONTROL_ID_LENGTH].upper()


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class ResultFacts:
    """What a notification says of the model's verdict (from the result row)."""

    suspected: bool
    probability: float
    threshold: float
    model_name: str
    model_version: str
    finding_name: str
    """The finding's short name (``ICH``, ``stroke``), for titles."""
    finding_meaning: str
    """The finding's code meaning (``Intracranial hemorrhage``)."""
    further_findings: tuple[tuple[str, str, float], ...] = ()
    """A multi-output model's other findings: (short name, meaning, probability), no verdict."""


@dataclass(frozen=True)
class Revision:
    """The earlier report of the study that a result revises (a better series, late slices)."""

    result_id: int
    suspected: bool
    series_instance_uid: str
    series_number: int | None
    series_description: str | None
    reported_at: datetime | None

    def document(self) -> dict[str, Any]:
        """As the payload's ``revises`` says it."""
        return {
            "result_id": self.result_id,
            "verdict": VERDICTS[self.suspected],
            "series_instance_uid": self.series_instance_uid,
            "series_number": self.series_number,
            "series_description": self.series_description,
            "reported_at": _time(self.reported_at),
        }


def series_text(number: object, description: object) -> str | None:
    """``series 2 HEAD 5mm STD``; None when neither is known."""
    if number is None and not description:
        return None
    return f"series {'?' if number is None else number} {description or ''}".strip()


def build_payload(
    *,
    key: str,
    event: NotificationEvent,
    study_instance_uid: str,
    series_instance_uid: str,
    calling_ae_title: str,
    result: ResultFacts | None = None,
    received_at: datetime | None = None,
    reported_at: datetime | None = None,
    failure: Failure | None = None,
    error_code: str | None = None,
    reason: str | None = None,
    result_id: int | None = None,
    series_number: int | None = None,
    series_description: str | None = None,
    revises: Revision | None = None,
) -> str:
    """The JSON stored with the outbox row (no patient identifiers: those are read when sent).

    ``verdict`` is always the model's clinical verdict (null when there is none): a failure
    (``event`` ``failed``) says what failed in ``failure``, ``error_code`` and ``reason``, and
    never replaces the verdict; it is the driving finding's (``finding_name``), and a
    multi-output model's other findings follow in ``further_findings`` with their probabilities
    only. ``series_number`` and ``series_description`` name the series
    that was classified (one per study); ``revises`` is the study's earlier report that this
    one replaces (null for the study's first).
    """
    document: dict[str, Any] = {
        "idempotency_key": key,
        "event": str(event),
        "verdict": None if result is None else VERDICTS[result.suspected],
        "finding_name": None if result is None else result.finding_name,
        "finding_meaning": None if result is None else result.finding_meaning,
        "further_findings": []
        if result is None
        else [
            {"finding_name": name, "finding_meaning": meaning, "probability": probability}
            for name, meaning, probability in result.further_findings
        ],
        "study_instance_uid": study_instance_uid,
        "series_instance_uid": series_instance_uid,
        "calling_ae_title": calling_ae_title,
        "probability": None if result is None else result.probability,
        "threshold": None if result is None else result.threshold,
        "model_name": None if result is None else result.model_name,
        "model_version": None if result is None else result.model_version,
        "received_at": _time(received_at),
        "reported_at": _time(reported_at),
        "failure": None if failure is None else str(failure),
        "error_code": error_code,
        "reason": reason,
        "result_id": result_id,
        "series_number": series_number,
        "series_description": series_description,
        "revises": None if revises is None else revises.document(),
    }
    return json.dumps(document, sort_keys=True)


@dataclass(frozen=True)
class Identifiers:
    """Identifiers read from the series' DICOM when the notification is sent (never stored)."""

    accession_number: str = ""
    patient_id: str = ""
    patient_name: str = ""


def read_identifiers(path: str | None) -> Identifiers:
    """Read accession number, patient ID and name from a stored instance or the SR.

    A missing or unreadable file (a purged series) gives empty identifiers, not an error: the
    stroke team is still told, by UID.
    """
    if not path:
        return Identifiers()
    try:
        dataset = pydicom.dcmread(
            Path(path),
            stop_before_pixels=True,
            specific_tags=["AccessionNumber", "PatientID", "PatientName"],
        )
    except (OSError, InvalidDicomError) as exc:
        log.warning("Identifiers not readable from %s: %s", path, exc)
        return Identifiers()
    return Identifiers(
        accession_number=str(dataset.get("AccessionNumber", "") or ""),
        patient_id=str(dataset.get("PatientID", "") or ""),
        patient_name=str(dataset.get("PatientName", "") or ""),
    )


def series_page_url(console_url: str | None, series_instance_uid: str) -> str | None:
    """The admin console's page of a series, or None when no console URL is configured."""
    if not console_url:
        return None
    return f"{console_url.rstrip('/')}/series/{quote(series_instance_uid, safe='')}"


def preview_url(console_url: str | None, result_id: object) -> str | None:
    """The console's URL of a result's preview (it needs a login or a bearer token), or None."""
    if not console_url or not isinstance(result_id, int):
        return None
    return f"{console_url.rstrip('/')}/previews/{result_id}.jpg"


@dataclass(frozen=True)
class Notice:
    """Everything a channel needs to write its message."""

    payload: dict[str, Any]
    identifiers: Identifiers
    series_url: str | None = None
    """The series page of the admin console (``worker.console_url``), or None."""
    preview_url: str | None = None
    """The console's URL of the preview image (behind a login or a token), or None."""
    preview_path: Path | None = None
    """The preview image's file, for a destination that attaches it; None when there is none."""

    @property
    def key(self) -> str:
        """The idempotency key (HL7 message control ID)."""
        return str(self.payload["idempotency_key"])

    @property
    def event(self) -> NotificationEvent:
        """What happened."""
        return NotificationEvent(self.payload["event"])

    @property
    def verdict(self) -> str | None:
        """The clinical verdict, ``SUSPECTED`` or ``NOT SUSPECTED``; None when there is none."""
        verdict = self.payload.get("verdict")
        # Rows written before failures kept the verdict said "FAILED" here.
        return None if verdict in (None, "FAILED") else str(verdict)

    @property
    def failure(self) -> Failure | None:
        """What failed, for a failure notice (rows from before: not classified)."""
        if self.event != NotificationEvent.FAILED:
            return None
        failure = self.payload.get("failure")
        return Failure(failure) if failure else Failure.NOT_CLASSIFIED

    @property
    def headline(self) -> str:
        """``AI ICH TRIAGE: SUSPECTED``; for a failure, ``... TRIAGE: REPORT NOT DELIVERED``."""
        name = self.payload.get("finding_name")
        prefix = f"AI {name.upper()} TRIAGE" if name else "AI TRIAGE"
        failure = self.failure
        return f"{prefix}: {HEADLINE_FAILURES[failure] if failure else self.verdict}"

    @property
    def finding_text(self) -> str | None:
        """``Intracranial hemorrhage suspected`` (or ``not suspected``); None without a verdict."""
        meaning, verdict = self.payload.get("finding_meaning"), self.verdict
        if not meaning or verdict is None:
            return None
        return f"{meaning} {verdict.lower()}"

    @property
    def further_findings_text(self) -> str | None:
        """``Further findings (probability only): Subdural hemorrhage 0.40``; None without."""
        further = self.payload.get("further_findings") or []
        if not further:
            return None
        listed = ", ".join(f"{f['finding_meaning']} {f['probability']:.2f}" for f in further)
        return f"Further findings (probability only): {listed}"

    @property
    def series_text(self) -> str | None:
        """The classified series: ``series 2 HEAD 5mm STD`` (None on rows from before)."""
        return series_text(
            self.payload.get("series_number"), self.payload.get("series_description")
        )

    @property
    def revises(self) -> dict[str, Any] | None:
        """The study's earlier report that this one revises (its verdict and series), or None."""
        revises = self.payload.get("revises")
        return revises if isinstance(revises, dict) else None

    @property
    def revision_text(self) -> str | None:
        """``This report revises the study's earlier one (series 4 HEAD 1.25mm: NOT
        SUSPECTED).``; None for a study's first report."""
        revises = self.revises
        if revises is None:
            return None
        earlier = series_text(revises.get("series_number"), revises.get("series_description"))
        return (
            f"This report revises the study's earlier one ({earlier or 'another series'}: "
            f"{revises.get('verdict')})."
        )

    def document(self) -> dict[str, Any]:
        """The webhook's JSON document: the payload, the accession number, the series page
        (``series_url``) and the preview (``preview_url``, behind a login or a token); the URLs
        are null when no admin console URL is configured."""
        return {
            **self.payload,
            "accession_number": self.identifiers.accession_number,
            "series_url": self.series_url,
            "preview_url": self.preview_url,
        }


def load_notice(
    payload: str,
    source_path: str | None,
    *,
    console_url: str | None = None,
    preview_path: str | None = None,
) -> Notice:
    """The notice of one outbox row.

    Args:
        payload: The row's stored JSON.
        source_path: A stored instance (or the SR) to read the identifiers from.
        console_url: The admin console's public base URL; the links are made at send time, so
            a console moved since the row was written is linked where it is now.
        preview_path: The result's preview image, when one was written (linked, and attached
            where a destination opts in).
    """
    document = json.loads(payload)
    url = series_page_url(console_url, str(document["series_instance_uid"]))
    preview = Path(preview_path) if preview_path else None
    return Notice(
        document,
        read_identifiers(source_path),
        series_url=url,
        preview_url=preview_url(console_url, document.get("result_id")) if preview else None,
        preview_path=preview,
    )
