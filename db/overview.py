"""Read-only overviews for the admin console: series, results, jobs and exports.

Every function takes the caller's ``session`` and only reads. Filters are keyword-only and
optional; every list is paginated with ``limit`` and ``offset``, and the series list is
counted too. Our own reports (SR and SC) that a PACS sends back to us, as an auto-route does,
are left out of every series list: they are recognised by their SOP Instance UIDs, recorded in
the exports table. Statistics over a time window are in :mod:`db.statistics`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased, lazyload

from db._query import chunks, utc
from db.enums import ExportKind, ExportStatus, JobStatus, SearchTermKind
from db.errors import NotFoundError
from db.findings import FindingScore, score_of
from db.jobs import STAGES
from db.models import (
    Export,
    Instance,
    Job,
    Result,
    Series,
    SeriesHeader,
    SeriesSearchTerm,
    SliceScore,
    Study,
)
from db.series_state import SeriesState, report_status, series_state, state_condition

#: Any SELECT statement, whatever its columns.
AnySelect = TypeVar("AnySelect", bound=Select[*tuple[Any, ...]])

__all__ = [
    "Filters",
    "Search",
    "SeriesDetail",
    "SeriesRow",
    "SeriesState",
    "SliceProbability",
    "Stage",
    "count_series",
    "first_instances",
    "list_exports",
    "list_jobs",
    "list_series",
    "own_report_series",
    "report_status",
    "report_statuses",
    "series_detail",
    "stations",
]


@dataclass(frozen=True)
class Search:
    """A search as the database matches it: the text itself against the Study and Series
    Instance UIDs, and keyed hashes (see :mod:`db.search_index`) against the identifiers.

    A series matches if any part matches; every one of ``name_parts`` must be a part of its
    Patient's Name.
    """

    text: str
    accession: str | None = None
    patient_id: str | None = None
    name_parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Filters:
    """What a list may be narrowed to; None means any.

    ``since`` and ``until`` bound the time the series' last instance arrived (for jobs and
    exports: the time they were made).
    """

    since: datetime | None = None
    until: datetime | None = None
    suspected: bool | None = None
    series_status: SeriesState | None = None
    job_status: JobStatus | None = None
    export_status: ExportStatus | None = None
    calling_ae_title: str | None = None
    model_version: str | None = None
    with_result: bool = False
    """Only series that have a current result."""
    without_result: bool = False
    """Only series without a current result (not classified, or not yet)."""
    station: str | None = None
    """The sender as the worklist shows it: Station Name, else calling AE title (series only)."""
    search: Search | None = None
    """Series only."""


@dataclass(frozen=True)
class SeriesRow:
    """One series with its current job and its current (non-superseded) result."""

    series_instance_uid: str
    study_instance_uid: str
    series_description: str | None
    modality: str
    calling_ae_title: str
    station_name: str | None
    """Station Name of its first instance (None until the console indexed it, or unknown)."""
    status: SeriesState
    """Where it stands: ``not_delivered`` when its report is a dead letter."""
    skip_reason: str | None
    instance_count: int
    """Instances received (every SOP class, localizers and other stacks included)."""
    axial_slices: int | None
    """Axial slices of the stack the model reads (None until the series is judged
    classifiable); fewer than ``instance_count`` when instances were left out."""
    first_received_at: datetime
    last_received_at: datetime
    job_id: int | None
    job_status: JobStatus | None
    probability: float | None
    suspected: bool | None
    threshold: float | None
    model_name: str | None
    model_version: str | None
    finding_name: str | None
    """What the model looks for, short (``ICH``), from the result; None without a result."""
    finding_meaning: str | None
    """The same, as its code meaning (``Intracranial hemorrhage``)."""
    completed_at: datetime | None
    """When the listener judged the series complete (its quiet period over) for this job."""
    reported_at: datetime | None
    """When the job's report (and heat map) reached every destination."""
    latency_s: float | None
    """Seconds from ``completed_at`` to ``reported_at`` (None until reported). Not from the
    last instance: a series sent again after its report would have a later last instance."""
    export_status: ExportStatus | None
    """Delivery state of the report (the SR): see :func:`report_status`."""
    dead_exports: int
    """Exports of the current result (SR or SC, any destination) that gave up."""
    further_findings: tuple[FindingScore, ...]
    """A multi-output model's other findings on the current result, in its spec's order;
    empty for a single-finding model."""


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
    own_report_of: str | None = None
    """Set when this series is our own report (SR or SC) sent back to us: the Series Instance
    UID of the series it reports on."""


@dataclass(frozen=True)
class _ReportSummary:
    report: ExportStatus | None
    dead: int


def own_report_series() -> Select[int]:
    """Ids of the series made of our own SR and SC instances, as a PACS sends them back."""
    return select(Instance.series_id).join(
        Export, Export.sop_instance_uid == Instance.sop_instance_uid
    )


def _is_current_job() -> ColumnElement[bool]:
    """The job joined to a series is its newest one.

    A correlated lookup (the index on ``jobs.series_id``), not ``IN`` over every series' newest
    job: SQLite evaluates that list again for each row of an outer join (0.6 s for 2000 series).
    """
    newer = aliased(Job)
    newest = (
        select(func.max(newer.id))
        .where(newer.series_id == Series.id)
        .correlate(Series)
        .scalar_subquery()
    )
    return (Job.series_id == Series.id) & (Job.id == newest)


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
        (filters.job_status, Job.status),
        (filters.export_status, Export.status),
        (filters.calling_ae_title, Series.calling_ae_title),
        (filters.model_version, Result.model_version),
    ):
        if value is not None:
            conditions.append(column == value)
    if filters.series_status is not None:
        conditions.append(state_condition(filters.series_status))
    if filters.with_result:
        conditions.append(Result.id.is_not(None))
    if filters.without_result:
        conditions.append(Result.id.is_(None))
    return conditions


def _search_condition(search: Search) -> ColumnElement[bool]:
    matches: list[ColumnElement[bool]] = [
        Series.series_instance_uid == search.text,
        Study.study_instance_uid == search.text,
    ]
    term = SeriesSearchTerm
    for kind, value in (
        (SearchTermKind.ACCESSION, search.accession),
        (SearchTermKind.PATIENT_ID, search.patient_id),
    ):
        if value:
            matches.append(
                Series.id.in_(
                    select(term.series_id).where(term.kind == kind, term.term_hmac == value)
                )
            )
    parts = set(search.name_parts)
    if parts:
        matches.append(
            Series.id.in_(
                select(term.series_id)
                .where(term.kind == SearchTermKind.PATIENT_NAME, term.term_hmac.in_(parts))
                .group_by(term.series_id)
                .having(func.count(func.distinct(term.term_hmac)) == len(parts))
            )
        )
    return or_(*matches)


def _sender() -> ColumnElement[str]:
    """The sender as shown: the Station Name, else the calling AE title."""
    return func.coalesce(SeriesHeader.station_name, Series.calling_ae_title)


def _series_statement(statement: AnySelect, filters: Filters) -> AnySelect:
    """``statement`` over series with their current job and result (outer joins), filtered."""
    if filters.export_status is not None:
        raise ValueError("Series are not filtered by export status; list the exports instead.")
    statement = (
        statement.select_from(Series)
        .join(Study, Series.study_id == Study.id)
        .outerjoin(Job, _is_current_job())
        .outerjoin(Result, (Result.series_id == Series.id) & Result.superseded.is_(False))
        .outerjoin(SeriesHeader, SeriesHeader.series_id == Series.id)
        .where(*_conditions(filters, at=Series.last_received_at))
        .where(Series.id.not_in(own_report_series()))
    )
    if filters.station is not None:
        statement = statement.where(_sender() == filters.station)
    if filters.search is not None:
        statement = statement.where(_search_condition(filters.search))
    return statement


def _rows_statement(filters: Filters) -> Select[Series, Job, Result, str | None]:
    columns = select(Series, Job, Result, SeriesHeader.station_name).options(
        # The models' inner-joined eager loads would turn these outer joins into inner ones.
        lazyload(Job.series),
        lazyload(Result.job),
    )
    return _series_statement(columns, filters)


def _report_summaries(session: Session, result_ids: Sequence[int]) -> dict[int, _ReportSummary]:
    """Each result's report state (its SRs, see :func:`report_status`) and dead exports."""
    found: dict[int, tuple[set[ExportStatus], int]] = {}
    for chunk in chunks(list(result_ids)):
        for result_id, kind, status in session.execute(
            select(Export.result_id, Export.kind, Export.status).where(Export.result_id.in_(chunk))
        ):
            reports, dead = found.get(result_id, (set(), 0))
            if kind == ExportKind.SR:
                reports.add(status)
            found[result_id] = (reports, dead + (status == ExportStatus.DEAD))
    return {
        result_id: _ReportSummary(report_status(reports), dead)
        for result_id, (reports, dead) in found.items()
    }


def report_statuses(session: Session, result_ids: Sequence[int]) -> dict[int, ExportStatus]:
    """The delivery state of each result's report (see :func:`report_status`), by result id."""
    found = _report_summaries(session, result_ids)
    return {rid: summary.report for rid, summary in found.items() if summary.report is not None}


def _row(
    series: Series,
    job: Job | None,
    result: Result | None,
    station_name: str | None,
    summary: _ReportSummary | None,
) -> SeriesRow:
    completed = None if job is None else job.completed_at
    reported = None if job is None else job.exported_at
    latency = None
    if completed is not None and reported is not None:
        # Never negative: the clocks of the listener's and the worker's hosts may differ.
        latency = max(0.0, (reported - completed).total_seconds())
    report = None if result is None or summary is None else summary.report
    job_status = None if job is None else job.status
    return SeriesRow(
        series_instance_uid=series.series_instance_uid,
        study_instance_uid=series.study.study_instance_uid,
        series_description=series.series_description,
        modality=series.modality,
        calling_ae_title=series.calling_ae_title,
        station_name=station_name,
        status=series_state(series.status, job_status, report),
        skip_reason=series.skip_reason,
        instance_count=series.instance_count,
        axial_slices=series.axial_slices,
        first_received_at=series.first_received_at,
        last_received_at=series.last_received_at,
        job_id=None if job is None else job.id,
        job_status=job_status,
        probability=None if result is None else result.probability,
        suspected=None if result is None else result.suspected,
        threshold=None if result is None else result.threshold,
        model_name=None if result is None else result.model_name,
        model_version=None if result is None else result.model_version,
        finding_name=None if result is None else result.finding_name,
        finding_meaning=None if result is None else result.finding_meaning,
        completed_at=completed,
        reported_at=reported,
        latency_s=latency,
        export_status=report,
        dead_exports=0 if result is None or summary is None else summary.dead,
        further_findings=()
        if result is None
        else tuple(score_of(found) for found in result.further_findings),
    )


def list_series(
    *, session: Session, filters: Filters | None = None, limit: int = 50, offset: int = 0
) -> list[SeriesRow]:
    """Return series, newest last instance first, with their current job and result."""
    statement = (
        _rows_statement(filters or Filters())
        .order_by(Series.last_received_at.desc(), Series.id.desc())
        .limit(limit)
        .offset(offset)
    )
    rows: list[tuple[Series, Job | None, Result | None, str | None]] = list(
        session.execute(statement).all()
    )
    summaries = _report_summaries(session, [r.id for _, _, r, _ in rows if r is not None])
    return [
        _row(series, job, result, station, summaries.get(result.id) if result else None)
        for series, job, result, station in rows
    ]


def count_series(*, session: Session, filters: Filters | None = None) -> int:
    """How many series :func:`list_series` lists with these filters, over all pages."""
    statement = _series_statement(select(func.count(Series.id)), filters or Filters())
    return int(session.execute(statement).scalar_one())


def stations(*, session: Session) -> list[str]:
    """Every sender the worklist can be narrowed to: Station Names, else calling AE titles."""
    sender = _sender()
    statement = (
        select(sender)
        .select_from(Series)
        .outerjoin(SeriesHeader, SeriesHeader.series_id == Series.id)
        .where(Series.id.not_in(own_report_series()))
        .distinct()
        .order_by(sender)
    )
    return [str(name) for name in session.execute(statement).scalars() if name]


def first_instances(*, session: Session, series_instance_uids: Sequence[str]) -> dict[str, str]:
    """The stored path of each series' first instance (relative to the storage root), by UID."""
    found: dict[str, str] = {}
    for chunk in chunks(list(series_instance_uids)):
        first = (
            select(func.min(Instance.id))
            .join(Series, Instance.series_id == Series.id)
            .where(Series.series_instance_uid.in_(chunk))
            .group_by(Instance.series_id)
        )
        statement = (
            select(Series.series_instance_uid, Instance.path)
            .join(Series, Instance.series_id == Series.id)
            .where(Instance.id.in_(first))
        )
        found.update({uid: path for uid, path in session.execute(statement)})
    return found


def _own_report_of(session: Session, series_id: int) -> str | None:
    """The Series Instance UID a series of our own reports (sent back to us) reports on."""
    reported = aliased(Series)
    statement = (
        select(reported.series_instance_uid)
        .select_from(Instance)
        .join(Export, Export.sop_instance_uid == Instance.sop_instance_uid)
        .join(Result, Export.result_id == Result.id)
        .join(reported, Result.series_id == reported.id)
        .where(Instance.series_id == series_id)
        .limit(1)
    )
    found: str | None = session.execute(statement).scalar_one_or_none()
    return found


def series_detail(*, session: Session, series_instance_uid: str) -> SeriesDetail:
    """Return one series with its stages, jobs, slice scores and exports.

    Our own reports sent back to us are found too (``own_report_of`` says so).

    Raises:
        NotFoundError: No series has this UID.
    """
    statement = (
        select(Series, Job, Result, SeriesHeader.station_name)
        .options(lazyload(Job.series), lazyload(Result.job))
        .select_from(Series)
        .outerjoin(Job, _is_current_job())
        .outerjoin(Result, (Result.series_id == Series.id) & Result.superseded.is_(False))
        .outerjoin(SeriesHeader, SeriesHeader.series_id == Series.id)
        .where(Series.series_instance_uid == series_instance_uid)
    )
    row: tuple[Series, Job | None, Result | None, str | None] | None = session.execute(
        statement
    ).first()
    if row is None:
        raise NotFoundError(f"No series with Series Instance UID {series_instance_uid} exists.")
    series, job, result, station = row
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
    summary = _ReportSummary(
        report_status({e.status for e in exports if e.kind == ExportKind.SR}),
        sum(1 for e in exports if e.status == ExportStatus.DEAD),
    )
    return SeriesDetail(
        row=_row(series, job, result, station, summary),
        stages=stages,
        jobs=jobs,
        slice_scores=scores,
        exports=exports,
        instance_paths=[path for path, _ in instances],
        instance_uids=[uid for _, uid in instances],
        own_report_of=_own_report_of(session, series.id),
    )


def _no_series_filters(filters: Filters) -> Filters:
    if filters.station is not None or filters.search is not None:
        raise ValueError("Only series are filtered by station or searched.")
    return filters


def list_jobs(
    *, session: Session, filters: Filters | None = None, limit: int = 50, offset: int = 0
) -> list[Job]:
    """Return jobs, newest first; ``since`` and ``until`` bound the time each job was made."""
    statement = (
        select(Job)
        .join(Series, Job.series_id == Series.id)
        .outerjoin(Result, Result.job_id == Job.id)
        .where(*_conditions(_no_series_filters(filters or Filters()), at=Job.created_at))
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
        .where(*_conditions(_no_series_filters(filters or Filters()), at=Export.created_at))
        .order_by(Export.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(session.execute(statement).scalars())
