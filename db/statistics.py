"""Activity statistics for the admin console and counts by state for its metrics.

Every function takes the caller's ``session`` and only reads.
"""

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from db._query import utc
from db.enums import ExportStatus, JobStatus
from db.models import Export, Instance, Job, Notification, Series
from db.overview import Filters, list_series
from db.series_state import SeriesState


@dataclass(frozen=True)
class Stats:
    """Activity over a time window."""

    series_per_day: list[tuple[str, int]]
    suspected_per_day: list[tuple[str, int]]
    results: int
    suspected: int
    suspected_share: float | None
    """Share of results that are suspected, or None without results."""
    latency_p50_s: float | None
    """Median seconds from a series judged complete to its report delivered."""
    latency_p95_s: float | None
    failed_jobs: int
    """Jobs that failed for good (dead letters) within the window."""
    dead_exports: int
    """Exports that became dead letters within the window."""
    failed_jobs_now: int
    """Dead-letter jobs waiting now, of any age (not yet retried)."""
    dead_exports_now: int
    """Dead-letter exports waiting now, of any age (not yet retried)."""
    skipped_series: int
    """Series not eligible for inference (our own reports sent back to us not counted)."""
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    suspected_by_finding: dict[str, int] = field(default_factory=dict)
    """Suspected results by the finding their model looks for (``ICH``, ``stroke``)."""


def _percentile(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, math.ceil(share * len(ordered)) - 1)
    return ordered[index]


def last_days(days: int, now: datetime | None = None) -> datetime:
    """The start of a window of ``days`` calendar days (UTC) that ends now: 1 is today."""
    today = utc(now).date()
    return datetime.combine(today - timedelta(days=days - 1), time.min, tzinfo=UTC)


def stats(*, session: Session, since: datetime, now: datetime | None = None) -> Stats:
    """Return activity from ``since`` to ``now``: series and results per day, latency, failures.

    Latency is the time from a series judged complete to its report delivered (see
    :attr:`db.overview.SeriesRow.latency_s`). Failures are given twice: those of the window (by
    the time the job or export became a dead letter) and every dead letter still waiting now,
    whatever its age. Our own reports that a PACS sent back to us are not series here.
    """
    until = utc(now)
    series_rows = list_series(
        session=session, filters=Filters(since=since, until=until), limit=100_000
    )
    per_day = Counter(f"{row.last_received_at:%Y-%m-%d}" for row in series_rows)
    suspected_days = Counter(
        f"{row.last_received_at:%Y-%m-%d}" for row in series_rows if row.suspected
    )
    day = utc(since).date()
    days = []
    while day <= until.date():
        days.append(day.isoformat())
        day += timedelta(days=1)
    latencies = [row.latency_s for row in series_rows if row.latency_s is not None]
    skipped = Counter(
        (row.skip_reason or "unknown") for row in series_rows if row.status == SeriesState.SKIPPED
    )
    results = sum(1 for row in series_rows if row.probability is not None)
    suspected = sum(1 for row in series_rows if row.suspected)
    findings = Counter(row.finding_name or "unknown" for row in series_rows if row.suspected)
    start = utc(since)
    failed_job = Job.status == JobStatus.FAILED
    dead_export = Export.status == ExportStatus.DEAD

    def count(column: Any, *conditions: ColumnElement[bool]) -> int:
        return int(session.execute(select(func.count(column)).where(*conditions)).scalar_one())

    return Stats(
        series_per_day=[(d, per_day.get(d, 0)) for d in days],
        suspected_per_day=[(d, suspected_days.get(d, 0)) for d in days],
        results=results,
        suspected=suspected,
        suspected_share=suspected / results if results else None,
        latency_p50_s=_percentile(latencies, 0.5),
        latency_p95_s=_percentile(latencies, 0.95),
        failed_jobs=count(Job.id, failed_job, Job.updated_at >= start, Job.updated_at <= until),
        dead_exports=count(
            Export.id, dead_export, Export.updated_at >= start, Export.updated_at <= until
        ),
        failed_jobs_now=count(Job.id, failed_job),
        dead_exports_now=count(Export.id, dead_export),
        skipped_series=sum(skipped.values()),
        skipped_by_reason=dict(skipped),
        suspected_by_finding=dict(findings),
    )


@dataclass(frozen=True)
class StatusCounts:
    """How many series, jobs and exports are in each state right now."""

    series: dict[str, int]
    jobs: dict[str, int]
    exports: dict[str, int]


def status_counts(*, session: Session) -> StatusCounts:
    """Return the number of series, jobs and exports per status (for metrics)."""

    def count(column: Any) -> dict[str, int]:
        rows = session.execute(select(column, func.count()).group_by(column)).all()
        return {str(value): int(n) for value, n in rows}

    return StatusCounts(
        series=count(Series.status), jobs=count(Job.status), exports=count(Export.status)
    )


@dataclass(frozen=True)
class ServiceFacts:
    """What the health page says of the pipeline, read from the database."""

    queue_depth: int
    """Jobs waiting for a worker (pending in the outbox, or queued on the broker)."""
    last_instance_at: datetime | None
    """When the last instance was received, from any sender."""
    failed_jobs: int
    """Dead-letter jobs waiting (not re-queued)."""
    dead_exports: int
    """Dead-letter exports waiting (not retried)."""
    dead_notifications: int
    """Dead-letter notifications waiting (not retried)."""


def service_facts(*, session: Session) -> ServiceFacts:
    """Queue depth, the last instance received and the dead letters waiting, now."""

    def count(column: Any, *conditions: ColumnElement[bool]) -> int:
        return int(session.execute(select(func.count(column)).where(*conditions)).scalar_one())

    last: datetime | None = session.execute(select(func.max(Instance.received_at))).scalar_one()
    return ServiceFacts(
        queue_depth=count(Job.id, Job.status.in_([JobStatus.PENDING, JobStatus.QUEUED])),
        last_instance_at=None if last is None else utc(last),
        failed_jobs=count(Job.id, Job.status == JobStatus.FAILED),
        dead_exports=count(Export.id, Export.status == ExportStatus.DEAD),
        dead_notifications=count(Notification.id, Notification.status == ExportStatus.DEAD),
    )
