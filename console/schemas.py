"""The API's response models: what each route returns, as the OpenAPI document shows it.

Rows that db already returns as dataclasses (``SeriesRow``, ``Stats``) are response models as
they are; these add what the ORM rows and the series page need. No patient name or ID appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from db.enums import ExportKind, ExportStatus, JobStatus
from db.overview import SeriesRow, SliceProbability, Stage
from db.rows import Job


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class JobOut(_FromRow):
    """One job (a classification of a series, with its attempts)."""

    id: int
    series_instance_uid: str
    status: JobStatus
    attempts: int
    instance_count: int
    worker: str | None
    last_error: str | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    inferred_at: datetime | None
    exported_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> JobOut:
        """The job as returned, with its series' UID."""
        return cls.model_validate(
            {
                **{name: getattr(job, name) for name in cls.model_fields if hasattr(job, name)},
                "series_instance_uid": job.series.series_instance_uid,
            }
        )


class ExportOut(_FromRow):
    """One object (SR or heat-map SC) sent, or to be sent, to one destination."""

    id: int
    result_id: int
    kind: ExportKind
    destination: str
    sop_instance_uid: str
    status: ExportStatus
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True)
class SeriesDetailOut(SeriesRow):
    """One series: its row, stages, jobs (newest first), slice scores and exports."""

    stages: list[Stage]
    jobs: list[JobOut]
    slice_scores: list[SliceProbability]
    exports: list[ExportOut]
    own_report_of: str | None
    """Set when this series is our own report sent back by a PACS: the series it reports on."""


class AuditEntryOut(_FromRow):
    """One audited action: who, what, on what, when, and how it ended."""

    at: datetime
    actor: str
    action: str
    target: str
    result: str
    detail: str | None


class ActionOut(BaseModel):
    """How an admin action ended (errors are answered with their HTTP status instead)."""

    result: str
    detail: str
