"""The results as flat records: one model for `GET /api/results` and `stroke-triage results`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from pydantic import BaseModel

import db.overview
from db.engine import Session
from db.overview import Filters, SeriesRow


class ResultRecord(BaseModel):
    """One current result, flat (also one CSV line); no patient name or ID."""

    last_received_at: str
    """When the series' last instance arrived (ISO 8601, UTC)."""
    study_instance_uid: str
    series_instance_uid: str
    calling_ae_title: str
    instances: int
    """Instances received."""
    probability: float | None
    verdict: str
    """``suspected``, ``not suspected`` or ``none``."""
    threshold: float | None
    model_name: str | None
    model_version: str | None
    series_status: str
    """As the console shows it: ``not_delivered`` when the report is a dead letter."""
    job_status: str | None
    export_status: str | None
    """The report's delivery state: ``sent``, ``dead``, ``pending`` or ``failed``."""
    latency_s: float | None
    """Seconds from the series judged complete to its report delivered."""
    finding: str | None
    """What the model looks for, short (``ICH``)."""
    finding_meaning: str | None
    further_findings: str
    """A multi-output model's other findings with their series probabilities, in its spec's
    order (``SDH 0.7500; EDH 0.2500``); empty for a single-finding model. They carry no verdict."""
    station_name: str | None
    completed_at: str | None
    """When the series was judged complete (ISO 8601, UTC)."""
    reported_at: str | None
    """When its report was delivered (ISO 8601, UTC)."""
    axial_slices: int | None
    """Axial slices of the stack the model read (fewer than ``instances`` when localizers,
    reformats or another reconstruction were left out)."""


#: Columns of a results record, in order (also the CSV header).
RESULT_FIELDS = tuple(ResultRecord.model_fields)


def verdict(row: SeriesRow) -> str:
    """``suspected``, ``not suspected`` or ``none`` (no result yet)."""
    if row.suspected is None:
        return "none"
    return "suspected" if row.suspected else "not suspected"


def verdict_text(row: SeriesRow) -> str:
    """The verdict as the SR's series description says it: ``AI ICH TRIAGE: SUSPECTED``."""
    if row.suspected is None:
        return "no result"
    finding = (row.finding_name or "finding").upper()
    return f"AI {finding} TRIAGE: {'SUSPECTED' if row.suspected else 'NOT SUSPECTED'}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def result_record(row: SeriesRow) -> ResultRecord:
    """One result as a flat record."""
    return ResultRecord(
        last_received_at=row.last_received_at.isoformat(),
        study_instance_uid=row.study_instance_uid,
        series_instance_uid=row.series_instance_uid,
        calling_ae_title=row.calling_ae_title,
        instances=row.instance_count,
        probability=None if row.probability is None else round(row.probability, 4),
        verdict=verdict(row),
        threshold=row.threshold,
        model_name=row.model_name,
        model_version=row.model_version,
        series_status=str(row.status),
        job_status=None if row.job_status is None else str(row.job_status),
        export_status=None if row.export_status is None else str(row.export_status),
        latency_s=None if row.latency_s is None else round(row.latency_s, 3),
        finding=row.finding_name,
        finding_meaning=row.finding_meaning,
        further_findings="; ".join(
            f"{found.finding_name} {found.probability:.4f}" for found in row.further_findings
        ),
        station_name=row.station_name,
        completed_at=_iso(row.completed_at),
        axial_slices=row.axial_slices,
        reported_at=_iso(row.reported_at),
    )


def result_records(
    *, session: Session, filters: Filters | None = None, limit: int = 50, offset: int = 0
) -> list[ResultRecord]:
    """The current results, newest first, as records (the API and the CLI both use this)."""
    wanted = replace(filters or Filters(), with_result=True)
    rows = db.overview.list_series(session=session, filters=wanted, limit=limit, offset=offset)
    return [result_record(row) for row in rows]


def to_csv(records: Sequence[ResultRecord]) -> str:
    """Records as CSV text with a header line."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(record.model_dump() for record in records)
    return buffer.getvalue()


def to_json(records: Sequence[ResultRecord]) -> str:
    """Records as a JSON array."""
    return json.dumps([record.model_dump() for record in records], indent=2)
