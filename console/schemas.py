"""The API's response models: what each route returns, as the OpenAPI document shows it.

No patient name or ID appears in any of them.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from db.enums import ExportKind, ExportStatus, JobStatus, SeriesStatus
from db.rows import Job


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SeriesOut(_FromRow):
    """One series with its current job and its current (non-superseded) result."""

    series_instance_uid: str
    study_instance_uid: str
    series_description: str | None
    modality: str
    calling_ae_title: str
    status: SeriesStatus
    skip_reason: str | None
    instance_count: int
    first_received_at: datetime
    last_received_at: datetime
    job_id: int | None
    job_status: JobStatus | None
    probability: float | None
    suspected: bool | None
    threshold: float | None
    model_name: str | None
    model_version: str | None
    latency_s: float | None
    export_status: ExportStatus | None


class StageOut(_FromRow):
    """One stage of the current job and when it happened."""

    name: str
    at: datetime | None


class SliceScoreOut(_FromRow):
    """The probability of one slice; ``rank`` 1 is the most suspicious."""

    sop_instance_uid: str
    probability: float
    rank: int


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


class SeriesDetailOut(SeriesOut):
    """One series: its row, stages, jobs (newest first), slice scores and exports."""

    stages: list[StageOut]
    jobs: list[JobOut]
    slice_scores: list[SliceScoreOut]
    exports: list[ExportOut]


class StatsOut(_FromRow):
    """Activity over the last ``days`` calendar days (UTC), today included."""

    series_per_day: list[tuple[str, int]]
    suspected_per_day: list[tuple[str, int]]
    results: int
    suspected: int
    suspected_share: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    failed_jobs: int
    dead_exports: int
    failed_jobs_now: int
    dead_exports_now: int
    skipped_series: int
    skipped_by_reason: dict[str, int]


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
