"""Studies: the one series per study that the model reads, and what the console shows of a study.

The listener judges a study once it has gone quiet: it records each series' facts, then the
choice (:func:`apply_choice`): the chosen series gets the job, every other series its reason.
Every function takes the caller's ``session``, flushes, and never commits.
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db._query import one, series_for_update, utc
from db.enums import ExportKind, ExportStatus, JobStatus, SeriesChoice, SeriesStatus
from db.errors import NotFoundError
from db.jobs import create_job
from db.models import Export, Job, Result, Series, Study
from db.overview import report_status
from db.receiving import skip_series

logger = logging.getLogger(__name__)

#: Job states of a series that has no result yet: superseded when another series is chosen.
_UNREPORTED_JOB_STATUSES = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.STARTED)


# The listener's judgement -------------------------------------------------------------------


def study_series(*, session: Session, study_id: int) -> list[Series]:
    """Every series of a study, in the order they were first recorded."""
    statement = select(Series).where(Series.study_id == study_id).order_by(Series.id)
    return list(session.execute(statement).scalars())


def record_series_facts(
    *,
    session: Session,
    series_instance_uid: str,
    series_number: int | None,
    convolution_kernel: str | None,
    slice_thickness_mm: float | None,
    axial_slices: int,
    coverage_mm: float,
    derived: bool,
) -> None:
    """Record what the study's choice looks at in a series (its classifiable axial stack)."""
    session.execute(
        update(Series)
        .where(Series.series_instance_uid == series_instance_uid)
        .values(
            series_number=series_number,
            convolution_kernel=None if convolution_kernel is None else convolution_kernel[:64],
            slice_thickness_mm=slice_thickness_mm,
            axial_slices=axial_slices,
            coverage_mm=coverage_mm,
            derived=derived,
        )
        .execution_options(synchronize_session="fetch")
    )
    session.flush()


def mark_not_eligible(
    *, session: Session, series_instance_uid: str, reason: str, now: datetime | None = None
) -> Series:
    """Skip a series that cannot be classified at all (a localizer, a reformat, ...)."""
    series = skip_series(
        session=session, series_instance_uid=series_instance_uid, reason=reason, now=now
    )
    series.choice = SeriesChoice.NOT_ELIGIBLE
    series.choice_reason = reason
    session.flush()
    return series


def apply_choice(
    *,
    session: Session,
    chosen: str | None,
    reasons: Mapping[str, str],
    new_job: bool,
    now: datetime | None = None,
) -> Job | None:
    """Record a study's choice: the chosen series (and its new job), and why not each other.

    A series passed over loses its jobs that have no result yet (``SUPERSEDED``: no report will
    be made on it); without a result, or just received again, it is ``SKIPPED`` with its
    reason. One that was reported before is ``DONE`` when a job of it was superseded (late
    slices waiting for a worker), and otherwise keeps its state: its result is superseded when
    the chosen series' result is stored, and that report names it as the one it revises.

    Args:
        session: Database session.
        chosen: The chosen series; None when no series of the study is readable.
        reasons: Why each candidate was chosen or not, by Series Instance UID.
        new_job: Put a new job for the chosen series in the outbox (it was newly received,
            or newly chosen).
        now: Current time.

    Returns:
        The new job, if one was made.
    """
    now = utc(now)
    job = None
    for uid, reason in reasons.items():
        series = series_for_update(session, uid)
        series.choice_reason = reason
        if uid == chosen:
            series.choice = SeriesChoice.CHOSEN
            if new_job:
                job = create_job(session=session, series_instance_uid=uid, now=now)
            continue
        series.choice = SeriesChoice.PASSED_OVER
        superseded = session.execute(
            update(Job)
            .where(Job.series_id == series.id, Job.status.in_(_UNREPORTED_JOB_STATUSES))
            .values(status=JobStatus.SUPERSEDED, last_error=reason, updated_at=now)
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        ).all()
        reported = session.execute(
            select(Result.id).where(Result.series_id == series.id).limit(1)
        ).first()
        # Newly received (its late slices too) or never reported: nothing more will be made.
        if reported is None or series.status is SeriesStatus.RECEIVING:
            series.status = SeriesStatus.SKIPPED
            series.skip_reason = reason
            series.completed_at = series.completed_at or now
        elif superseded:
            # Reported before, and a job for its late slices was waiting: that job will never
            # run, so the series stands as reported instead of "queued" for ever.
            series.status = SeriesStatus.DONE
        if superseded:
            logger.info("Series %s passed over: %s jobs superseded.", uid, len(superseded))
    session.flush()
    return job


def withdraw_choice(*, session: Session, series_instance_uid: str, reason: str) -> None:
    """Pass over a series chosen before that can no longer be read; its status stays."""
    series = series_for_update(session, series_instance_uid)
    series.choice = SeriesChoice.PASSED_OVER
    series.choice_reason = reason
    session.flush()
    logger.info("Series %s no longer chosen: %s", series_instance_uid, reason)


# What the console shows ---------------------------------------------------------------------


@dataclass(frozen=True)
class StudySeries:
    """One series of a study and its place in the study's choice."""

    series_instance_uid: str
    series_number: int | None
    series_description: str | None
    modality: str
    calling_ae_title: str
    status: SeriesStatus
    choice: SeriesChoice | None
    """None: not judged since the choice exists (revision 0013), or still receiving."""
    choice_reason: str | None
    skip_reason: str | None
    instance_count: int
    axial_slices: int | None
    convolution_kernel: str | None
    slice_thickness_mm: float | None
    coverage_mm: float | None
    derived: bool | None
    first_received_at: datetime
    last_received_at: datetime


@dataclass(frozen=True)
class StudyReport:
    """One report (result) of a study: the current one, or one that a later one revised."""

    result_id: int
    series_instance_uid: str
    series_number: int | None
    series_description: str | None
    probability: float
    suspected: bool
    threshold: float
    finding_name: str
    model_name: str
    model_version: str
    created_at: datetime
    superseded: bool
    shadow: bool
    replaces_result_id: int | None
    has_preview: bool
    report_status: ExportStatus | None
    """Delivery of its SR: ``sent``, ``dead``, ``pending`` or ``failed`` (None: no SR export)."""


@dataclass(frozen=True)
class StudyDetail:
    """A study: the chosen series, every series with its reason, and its reports."""

    study_instance_uid: str
    chosen: StudySeries | None
    series: list[StudySeries]
    reports: list[StudyReport]
    """Newest first; the first one not superseded is the study's current report."""

    @property
    def current_report(self) -> StudyReport | None:
        """The study's report now (None before the first one, or when none is current)."""
        return next((report for report in self.reports if not report.superseded), None)


@dataclass(frozen=True)
class StudyRow:
    """One study in the list: its chosen series and its current report."""

    study_instance_uid: str
    series_count: int
    last_received_at: datetime
    chosen_series_instance_uid: str | None
    chosen_series_number: int | None
    chosen_series_description: str | None
    result_id: int | None
    probability: float | None
    suspected: bool | None
    finding_name: str | None


def _report(result: Result, owner: Series, statuses: set[ExportStatus]) -> StudyReport:
    return StudyReport(
        result_id=result.id,
        series_instance_uid=owner.series_instance_uid,
        series_number=owner.series_number,
        series_description=owner.series_description,
        probability=result.probability,
        suspected=result.suspected,
        threshold=result.threshold,
        finding_name=result.finding_name,
        model_name=result.model_name,
        model_version=result.model_version,
        created_at=result.created_at,
        superseded=result.superseded,
        shadow=result.shadow,
        replaces_result_id=result.replaces_result_id,
        has_preview=result.preview_path is not None,
        report_status=report_status(statuses),
    )


def get_report(*, session: Session, result_id: int) -> StudyReport:
    """One report (result) of a study, with the series that made it.

    Raises:
        NotFoundError: No result has this id.
    """
    row = session.execute(
        select(Result, Series)
        .join(Series, Result.series_id == Series.id)
        .where(Result.id == result_id)
    ).first()
    if row is None:
        raise NotFoundError(f"No result {result_id} exists.")
    statuses = set(
        session.execute(
            select(Export.status).where(Export.result_id == result_id, Export.kind == ExportKind.SR)
        ).scalars()
    )
    return _report(row[0], row[1], statuses)


def _study_series(series: Series) -> StudySeries:
    return StudySeries(
        series_instance_uid=series.series_instance_uid,
        series_number=series.series_number,
        series_description=series.series_description,
        modality=series.modality,
        calling_ae_title=series.calling_ae_title,
        status=series.status,
        choice=series.choice,
        choice_reason=series.choice_reason,
        skip_reason=series.skip_reason,
        instance_count=series.instance_count,
        axial_slices=series.axial_slices,
        convolution_kernel=series.convolution_kernel,
        slice_thickness_mm=series.slice_thickness_mm,
        coverage_mm=series.coverage_mm,
        derived=series.derived,
        first_received_at=series.first_received_at,
        last_received_at=series.last_received_at,
    )


def study_detail(*, session: Session, study_instance_uid: str) -> StudyDetail:
    """Return a study with every series, the chosen one, and its reports (newest first).

    Raises:
        NotFoundError: No study has this UID.
    """
    study = one(
        session,
        select(Study).where(Study.study_instance_uid == study_instance_uid),
        f"study with Study Instance UID {study_instance_uid}",
    )
    series = [_study_series(s) for s in study_series(session=session, study_id=study.id)]
    rows = session.execute(
        select(Result, Series)
        .join(Series, Result.series_id == Series.id)
        .where(Series.study_id == study.id)
        .order_by(Result.created_at.desc(), Result.id.desc())
    ).all()
    statuses: dict[int, set[ExportStatus]] = {}
    for result_id, status in session.execute(
        select(Export.result_id, Export.status).where(
            Export.result_id.in_([result.id for result, _ in rows]), Export.kind == ExportKind.SR
        )
    ):
        statuses.setdefault(result_id, set()).add(status)
    reports = [_report(result, owner, statuses.get(result.id, set())) for result, owner in rows]
    chosen = next((s for s in series if s.choice is SeriesChoice.CHOSEN), None)
    return StudyDetail(
        study_instance_uid=study.study_instance_uid, chosen=chosen, series=series, reports=reports
    )


def list_studies(*, session: Session, limit: int = 50, offset: int = 0) -> list[StudyRow]:
    """Return studies, the newest instance first, with their chosen series and current report."""
    last = func.max(Series.last_received_at)
    found = session.execute(
        select(Study.id, Study.study_instance_uid, func.count(Series.id), last)
        .join(Series, Series.study_id == Study.id)
        .group_by(Study.id, Study.study_instance_uid)
        .order_by(last.desc(), Study.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    ids = [row[0] for row in found]
    chosen = {
        series.study_id: series
        for series in session.execute(
            select(Series).where(Series.study_id.in_(ids), Series.choice == SeriesChoice.CHOSEN)
        ).scalars()
    }
    current: dict[int, Result] = {}
    for found_result, study_id in session.execute(
        select(Result, Series.study_id)
        .join(Series, Result.series_id == Series.id)
        .where(Series.study_id.in_(ids), Result.superseded.is_(False))
        .order_by(Result.id)
    ):
        current[study_id] = found_result  # the newest current one, should there be several
    rows: list[StudyRow] = []
    for study_id, uid, count, last_received in found:
        series, result = chosen.get(study_id), current.get(study_id)
        rows.append(
            StudyRow(
                study_instance_uid=uid,
                series_count=count,
                last_received_at=last_received,
                chosen_series_instance_uid=None if series is None else series.series_instance_uid,
                chosen_series_number=None if series is None else series.series_number,
                chosen_series_description=None if series is None else series.series_description,
                result_id=None if result is None else result.id,
                probability=None if result is None else result.probability,
                suspected=None if result is None else result.suspected,
                finding_name=None if result is None else result.finding_name,
            )
        )
    return rows


def preview_path(*, session: Session, result_id: int) -> str | None:
    """The preview image of a result, if one was written.

    Raises:
        NotFoundError: No result has this id.
    """
    row = session.execute(select(Result.preview_path).where(Result.id == result_id)).first()
    if row is None:
        raise NotFoundError(f"No result {result_id} exists.")
    return row[0]


def set_preview_path(*, session: Session, result_id: int, path: str) -> None:
    """Record the preview image written for a result."""
    session.execute(
        update(Result)
        .where(Result.id == result_id)
        .values(preview_path=path)
        .execution_options(synchronize_session=False)
    )
    session.flush()
