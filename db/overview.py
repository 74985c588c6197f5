"""Read-only overviews for the admin console: series, results, jobs and exports.

Every function takes the caller's ``session`` and only reads. Filters are keyword-only and
optional; every list is paginated with ``limit`` and ``offset``. Statistics over a time window
are in :mod:`db.statistics`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session, lazyload

from db._query import chunks, utc
from db.enums import ExportKind, ExportStatus, JobStatus, SeriesStatus
from db.errors import NotFoundError
from db.jobs import STAGES
from db.models import Export, Instance, Job, Result, Series, SliceScore, Study

_EXPORT_PREFERENCE = (ExportStatus.SENT, ExportStatus.PENDING, ExportStatus.FAILED)


@dataclass(frozen=True)
class Filters:
    """What a list may be narrowed to; None means any.

    ``since`` and ``until`` bound the time the series' last instance arrived.
    """

    since: datetime | None = None
    until: datetime | None = None
    suspected: bool | None = None
    series_status: SeriesStatus | None = None
    job_status: JobStatus | None = None
    export_status: ExportStatus | None = None
    calling_ae_title: str | None = None
    model_version: str | None = None
    with_result: bool = False
    """Only series that have a current result."""


@dataclass(frozen=True)
class SeriesRow:
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
    """Seconds from the last instance received to the report exported (None until then)."""
    export_status: ExportStatus | None


@dataclass(frozen=True)
class Stage:
    """One stage of a job and when it happened."""

    name: str
    at: datetime | None


@dataclass(frozen=True)
class SliceProbability:
    """The probability of one slice; ``rank`` 1 is the most suspicious."""

    sop_instance_uid: str
    probability: float
    rank: int


@dataclass(frozen=True)
class SeriesDetail:
    """Everything the console shows about one series."""

    row: SeriesRow
    stages: list[Stage]
    jobs: list[Job]
    slice_scores: list[SliceProbability]
    exports: list[Export]
    instance_paths: list[str]
    """Stored paths of the instances (relative to the storage root), in order received."""
    instance_uids: list[str]


def _current_jobs() -> Select[int]:
    return select(func.max(Job.id)).group_by(Job.series_id)


def _series_statement(filters: Filters) -> Select[Series, Job, Result]:
    """Series with their current job and result (both None where missing: outer joins)."""
    statement = (
        select(Series, Job, Result)
        .join(Study, Series.study_id == Study.id)
        .outerjoin(Job, (Job.series_id == Series.id) & Job.id.in_(_current_jobs()))
        .outerjoin(Result, (Result.series_id == Series.id) & Result.superseded.is_(False))
        # The models' inner-joined eager loads would turn these outer joins into inner ones.
        .options(lazyload(Job.series), lazyload(Result.job))
    )
    conditions: list[ColumnElement[bool]] = []
    if filters.since is not None:
        conditions.append(Series.last_received_at >= utc(filters.since))
    if filters.until is not None:
        conditions.append(Series.last_received_at < utc(filters.until))
    if filters.suspected is not None:
        conditions.append(Result.suspected.is_(filters.suspected))
    if filters.series_status is not None:
        conditions.append(Series.status == filters.series_status)
    if filters.job_status is not None:
        conditions.append(Job.status == filters.job_status)
    if filters.calling_ae_title is not None:
        conditions.append(Series.calling_ae_title == filters.calling_ae_title)
    if filters.model_version is not None:
        conditions.append(Result.model_version == filters.model_version)
    if filters.with_result:
        conditions.append(Result.id.is_not(None))
    return statement.where(*conditions)


def _export_statuses(session: Session, result_ids: Sequence[int]) -> dict[int, set[ExportStatus]]:
    statuses: dict[int, set[ExportStatus]] = {}
    for chunk in chunks(list(result_ids)):
        for result_id, status in session.execute(
            select(Export.result_id, Export.status).where(
                Export.result_id.in_(chunk), Export.kind == ExportKind.SR
            )
        ):
            statuses.setdefault(result_id, set()).add(status)
    return statuses


def _best(present: set[ExportStatus]) -> ExportStatus | None:
    if ExportStatus.DEAD in present and ExportStatus.SENT not in present:
        return ExportStatus.DEAD
    return next((status for status in _EXPORT_PREFERENCE if status in present), None)


def _row(
    series: Series, job: Job | None, result: Result | None, exports: set[ExportStatus]
) -> SeriesRow:
    latency = None
    if job is not None and job.exported_at is not None:
        latency = (job.exported_at - series.last_received_at).total_seconds()
    return SeriesRow(
        series_instance_uid=series.series_instance_uid,
        study_instance_uid=series.study.study_instance_uid,
        series_description=series.series_description,
        modality=series.modality,
        calling_ae_title=series.calling_ae_title,
        status=series.status,
        skip_reason=series.skip_reason,
        instance_count=series.instance_count,
        first_received_at=series.first_received_at,
        last_received_at=series.last_received_at,
        job_id=None if job is None else job.id,
        job_status=None if job is None else job.status,
        probability=None if result is None else result.probability,
        suspected=None if result is None else result.suspected,
        threshold=None if result is None else result.threshold,
        model_name=None if result is None else result.model_name,
        model_version=None if result is None else result.model_version,
        latency_s=latency,
        export_status=None if result is None else _best(exports),
    )


def list_series(
    *, session: Session, filters: Filters | None = None, limit: int = 50, offset: int = 0
) -> list[SeriesRow]:
    """Return series, newest last instance first, with their current job and result."""
    statement = (
        _series_statement(filters or Filters())
        .order_by(Series.last_received_at.desc(), Series.id.desc())
        .limit(limit)
        .offset(offset)
    )
    rows: list[tuple[Series, Job | None, Result | None]] = list(session.execute(statement).all())
    statuses = _export_statuses(session, [r.id for _, _, r in rows if r is not None])
    return [
        _row(series, job, result, statuses.get(result.id, set()) if result else set())
        for series, job, result in rows
    ]


def worklist(
    *,
    session: Session,
    suspected_within: timedelta,
    limit: int = 50,
    now: datetime | None = None,
) -> list[SeriesRow]:
    """Return the newest series, with suspected ones received within ``suspected_within`` first.

    Both groups are newest first.
    """
    recent = utc(now) - suspected_within
    urgent = list_series(
        session=session, filters=Filters(since=recent, suspected=True), limit=limit
    )
    seen = {row.series_instance_uid for row in urgent}
    rest = [
        row
        for row in list_series(session=session, limit=limit)
        if row.series_instance_uid not in seen
    ]
    return (urgent + rest)[:limit]


def series_detail(*, session: Session, series_instance_uid: str) -> SeriesDetail:
    """Return one series with its stages, jobs, slice scores and exports.

    Raises:
        NotFoundError: No series has this UID.
    """
    statement = _series_statement(Filters()).where(
        Series.series_instance_uid == series_instance_uid
    )
    row: tuple[Series, Job | None, Result | None] | None = session.execute(statement).first()
    if row is None:
        raise NotFoundError(f"No series with Series Instance UID {series_instance_uid} exists.")
    series, job, result = row
    exports: list[Export] = []
    scores: list[SliceProbability] = []
    if result is not None:
        exports = list(
            session.execute(
                select(Export).where(Export.result_id == result.id).order_by(Export.id)
            ).scalars()
        )
        scores = [
            SliceProbability(s.sop_instance_uid, s.probability, s.rank)
            for s in session.execute(
                select(SliceScore).where(SliceScore.result_id == result.id)
            ).scalars()
        ]
    stages = [
        Stage("received", series.first_received_at),
        Stage("last instance", series.last_received_at),
    ]
    if job is not None:
        stages += [Stage(name, getattr(job, f"{name}_at")) for name in STAGES[1:]]
    jobs = list(
        session.execute(
            select(Job).where(Job.series_id == series.id).order_by(Job.id.desc())
        ).scalars()
    )
    instances = session.execute(
        select(Instance.path, Instance.sop_instance_uid)
        .where(Instance.series_id == series.id)
        .order_by(Instance.id)
    ).all()
    return SeriesDetail(
        row=_row(series, job, result, {e.status for e in exports if e.kind == ExportKind.SR}),
        stages=stages,
        jobs=jobs,
        slice_scores=scores,
        exports=exports,
        instance_paths=[path for path, _ in instances],
        instance_uids=[uid for _, uid in instances],
    )


def list_jobs(
    *, session: Session, filters: Filters | None = None, limit: int = 50, offset: int = 0
) -> list[Job]:
    """Return jobs, newest first, filtered by status, calling AE and time of the series."""
    filters = filters or Filters()
    statement = select(Job).join(Series, Job.series_id == Series.id)
    if filters.job_status is not None:
        statement = statement.where(Job.status == filters.job_status)
    if filters.calling_ae_title is not None:
        statement = statement.where(Series.calling_ae_title == filters.calling_ae_title)
    if filters.since is not None:
        statement = statement.where(Job.created_at >= utc(filters.since))
    if filters.until is not None:
        statement = statement.where(Job.created_at < utc(filters.until))
    statement = statement.order_by(Job.id.desc()).limit(limit).offset(offset)
    return list(session.execute(statement).scalars())


def list_exports(
    *, session: Session, filters: Filters | None = None, limit: int = 50, offset: int = 0
) -> list[Export]:
    """Return exports (dead letters included), newest first, filtered by status and model."""
    filters = filters or Filters()
    statement = select(Export).join(Result, Export.result_id == Result.id)
    if filters.export_status is not None:
        statement = statement.where(Export.status == filters.export_status)
    if filters.model_version is not None:
        statement = statement.where(Result.model_version == filters.model_version)
    if filters.since is not None:
        statement = statement.where(Export.created_at >= utc(filters.since))
    if filters.until is not None:
        statement = statement.where(Export.created_at < utc(filters.until))
    statement = statement.order_by(Export.id.desc()).limit(limit).offset(offset)
    return list(session.execute(statement).scalars())
