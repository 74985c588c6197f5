"""Read-only overviews for the admin console: series, results, jobs and exports.

Every function takes the caller's ``session`` and only reads. Filters are keyword-only and
optional; every list is paginated with ``limit`` and ``offset``. Statistics over a time window
are in :mod:`db.statistics`.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, lazyload

from db._query import chunks, utc
from db.enums import ExportKind, ExportStatus, JobStatus, SeriesStatus
from db.errors import NotFoundError
from db.jobs import STAGES
from db.models import Export, Instance, Job, Result, Series, SliceScore, Study

#: The order in which a report's export states decide its delivery state (see report_status).
_REPORT_PRECEDENCE = (
    ExportStatus.SENT,
    ExportStatus.DEAD,
    ExportStatus.PENDING,
    ExportStatus.FAILED,
)


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


def _conditions(
    filters: Filters, *, at: InstrumentedAttribute[datetime]
) -> list[ColumnElement[bool]]:
    """The WHERE conditions of ``filters``, the one filter builder of every list.

    ``since`` and ``until`` bound ``at``; every other filter names its own column, so the
    statement must select from the tables of the filters it is given (series, job, result,
    and export for ``export_status``).
    """
    conditions: list[ColumnElement[bool]] = []
    if filters.since is not None:
        conditions.append(at >= utc(filters.since))
    if filters.until is not None:
        conditions.append(at < utc(filters.until))
    for value, column in (
        (filters.suspected, Result.suspected),
        (filters.series_status, Series.status),
        (filters.job_status, Job.status),
        (filters.export_status, Export.status),
        (filters.calling_ae_title, Series.calling_ae_title),
        (filters.model_version, Result.model_version),
    ):
        if value is not None:
            conditions.append(column == value)
    if filters.with_result:
        conditions.append(Result.id.is_not(None))
    return conditions


def _series_statement(filters: Filters) -> Select[Series, Job, Result]:
    """Series with their current job and result (both None where missing: outer joins)."""
    if filters.export_status is not None:
        raise ValueError("Series are not filtered by export status; list the exports instead.")
    statement = (
        select(Series, Job, Result)
        .join(Study, Series.study_id == Study.id)
        .outerjoin(Job, (Job.series_id == Series.id) & Job.id.in_(_current_jobs()))
        .outerjoin(Result, (Result.series_id == Series.id) & Result.superseded.is_(False))
        # The models' inner-joined eager loads would turn these outer joins into inner ones.
        .options(lazyload(Job.series), lazyload(Result.job))
    )
    return statement.where(*_conditions(filters, at=Series.last_received_at))


def report_statuses(session: Session, result_ids: Sequence[int]) -> dict[int, ExportStatus]:
    """The delivery state of each result's report (see :func:`report_status`), by result id."""
    present: dict[int, set[ExportStatus]] = {}
    for chunk in chunks(list(result_ids)):
        for result_id, status in session.execute(
            select(Export.result_id, Export.status).where(
                Export.result_id.in_(chunk), Export.kind == ExportKind.SR
            )
        ):
            present.setdefault(result_id, set()).add(status)
    found = {result_id: report_status(statuses) for result_id, statuses in present.items()}
    return {result_id: status for result_id, status in found.items() if status is not None}


def report_status(present: Collection[ExportStatus]) -> ExportStatus | None:
    """The delivery state of a report from the states of its SR exports: the one rule.

    ``sent`` once any destination took it; otherwise ``dead`` if any gave up (the report is
    not delivered and nothing will try again), then ``pending``, then ``failed`` (retrying).
    The heat-map SC does not count: a report is its SR. None without SR exports.
    """
    for status in _REPORT_PRECEDENCE:
        if status in present:
            return status
    return None


def _row(
    series: Series, job: Job | None, result: Result | None, report: ExportStatus | None
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
        export_status=None if result is None else report,
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
    reports = report_statuses(session, [r.id for _, _, r in rows if r is not None])
    return [
        _row(series, job, result, reports.get(result.id) if result else None)
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
        row=_row(
            series,
            job,
            result,
            report_status({e.status for e in exports if e.kind == ExportKind.SR}),
        ),
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
    """Return jobs, newest first; ``since`` and ``until`` bound the time each job was made."""
    statement = (
        select(Job)
        .join(Series, Job.series_id == Series.id)
        .outerjoin(Result, Result.job_id == Job.id)
        .where(*_conditions(filters or Filters(), at=Job.created_at))
        .order_by(Job.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.execute(statement).scalars())


def list_exports(
    *, session: Session, filters: Filters | None = None, limit: int = 50, offset: int = 0
) -> list[Export]:
    """Return exports (dead letters included), newest first; ``since``/``until``: made then."""
    statement = (
        select(Export)
        .join(Result, Export.result_id == Result.id)
        .join(Job, Result.job_id == Job.id)
        .join(Series, Result.series_id == Series.id)
        .where(*_conditions(filters or Filters(), at=Export.created_at))
        .order_by(Export.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.execute(statement).scalars())
