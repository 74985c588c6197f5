"""Results: one classification per job, its slice scores, and the results overview.

Every function takes the caller's ``session``, flushes, and never commits: the caller owns the
transaction. Two workers racing to store the same result get one row (``ON CONFLICT``).
"""

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from db._query import (
    ACTIVE_JOB_STATUSES,
    chunks,
    insert,
    job_for_update,
    one,
    set_inferred,
    utc,
)
from db.enums import ExportStatus, JobStatus
from db.errors import JobStateError, ResultConflictError
from db.findings import FindingScore, insert_further_findings
from db.jobs import get_job
from db.models import Job, Result, ResultFinding, Series, SliceScore, Study
from db.overview import report_statuses

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """A model's verdict on a series, and which model gave it on which input (provenance)."""

    probability: float
    """Series-level probability of the finding."""
    suspected: bool
    """Whether ``probability`` reached ``threshold``."""
    threshold: float
    model_name: str
    model_version: str
    model_sha256: str
    """SHA-256 of the weights."""
    input_fingerprint: str
    """SHA-256 of the sorted SOP Instance UIDs used as input."""
    precision: str
    """``fp32`` or ``bf16``."""
    device: str
    """Device that ran the model (e.g. ``cpu``)."""
    finding_scheme: str
    """Coding scheme of what the model detects (from its checkpoint's spec; no default, so
    that a verdict never claims a finding its model did not name)."""
    finding_value: str
    """Code value of that finding."""
    finding_meaning: str
    """Code meaning of that finding."""
    finding_name: str
    """Short name of that finding, for titles and series descriptions (``ICH``)."""


@dataclass(frozen=True)
class ResultRow:
    """One line of the results overview."""

    study_instance_uid: str
    series_instance_uid: str
    series_description: str | None
    instance_count: int
    probability: float
    suspected: bool
    threshold: float
    model_version: str
    job_status: JobStatus
    created_at: datetime
    export_status: ExportStatus | None
    result_id: int
    job_id: int
    shadow: bool = False


def record_result(
    *,
    session: Session,
    job_id: int,
    verdict: Verdict,
    slice_scores: Sequence[tuple[str, float]],
    now: datetime | None = None,
    shadow: bool = False,
    further_findings: Sequence[FindingScore] = (),
) -> Result:
    """Store the result of a job, once.

    If the series already has a result for the same input fingerprint and model, that result is
    returned unchanged. Otherwise the result and its slice scores (ranked, 1 = most suspicious)
    are inserted and every other result of the study is marked superseded (one report per
    study); the newest of those is the one it revises (``replaces_result_id``). The job becomes
    ``INFERRED``.

    Args:
        session: Database session.
        job_id: The job.
        verdict: The model's verdict and provenance.
        slice_scores: ``(sop_instance_uid, probability)`` per slice, in any order.
        now: Current time.
        shadow: Made in shadow mode (nothing sent but to PACS marked shadow).
        further_findings: A multi-output model's other findings, in its spec's order.

    Returns:
        The stored result.

    Raises:
        NotFoundError: No such job.
        JobStateError: The job is superseded, failed or skipped and has no such result yet.
        ResultConflictError: The job already has a result for another input or model.
    """
    now = utc(now)
    job = job_for_update(session, job_id)
    identity = and_(
        Result.series_id == job.series_id,
        Result.input_fingerprint == verdict.input_fingerprint,
        Result.model_sha256 == verdict.model_sha256,
    )
    result = session.execute(select(Result).where(identity)).scalar_one_or_none()
    if result is None:
        if job.status not in (*ACTIVE_JOB_STATUSES, JobStatus.DONE):
            raise JobStateError(f"Job {job_id} is {job.status}; its result is not stored.")
        result_id = session.execute(
            insert(session, Result)
            .values(
                job_id=job.id,
                series_id=job.series_id,
                **asdict(verdict),
                created_at=now,
                superseded=False,
                shadow=shadow,
            )
            .on_conflict_do_nothing()
            .returning(Result.id)
        ).scalar_one_or_none()
        if result_id is None:
            # Lost a race with another worker, or this job already has a different result.
            result = session.execute(select(Result).where(identity)).scalar_one_or_none()
            if result is None:
                raise ResultConflictError(
                    f"Job {job_id} already has a result for another input or model."
                )
        else:
            ranked = sorted(slice_scores, key=lambda score: -score[1])
            for chunk in chunks(list(enumerate(ranked, start=1))):
                session.execute(
                    insert(session, SliceScore).values(
                        [
                            {
                                "result_id": result_id,
                                "sop_instance_uid": uid,
                                "probability": score,
                                "rank": rank,
                            }
                            for rank, (uid, score) in chunk
                        ]
                    )
                )
            insert_further_findings(session, ResultFinding, further_findings, result_id=result_id)
            # One report per study: this one supersedes the study's current one, whichever of
            # its series made it, and names it as the report it revises.
            study_series = select(Series.id).where(Series.study_id == job.series.study_id)
            superseded = session.execute(
                update(Result)
                .where(
                    Result.series_id.in_(study_series),
                    Result.id != result_id,
                    Result.superseded.is_(False),
                )
                .values(superseded=True)
                .returning(Result.id)
            ).all()
            if superseded:
                session.execute(
                    update(Result)
                    .where(Result.id == result_id)
                    .values(replaces_result_id=max(row[0] for row in superseded))
                )
            result = one(session, select(Result).where(Result.id == result_id), "new result")
            logger.info(
                "Result %s stored for job %s (p=%.3f, suspected=%s, %s slices, %s superseded).",
                result.id,
                job_id,
                verdict.probability,
                verdict.suspected,
                len(ranked),
                len(superseded),
            )
    set_inferred(job, now)
    session.flush()
    return result


def find_result(
    *, session: Session, job_id: int, input_fingerprint: str, model_sha256: str
) -> Result | None:
    """Return the result of the job's series for these instances and this model, or None.

    A result found is a retry or a duplicate delivery: reuse it, never recompute.

    Raises:
        NotFoundError: No such job.
    """
    job = get_job(session=session, job_id=job_id)
    statement = select(Result).where(
        Result.series_id == job.series_id,
        Result.input_fingerprint == input_fingerprint,
        Result.model_sha256 == model_sha256,
    )
    return session.scalars(statement).first()


def result_by_id(*, session: Session, result_id: int) -> Result:
    """Return the result with this id.

    Raises:
        NotFoundError: No such result.
    """
    return one(session, select(Result).where(Result.id == result_id), f"result {result_id}")


def get_result(*, session: Session, job_id: int) -> Result | None:
    """Return the result stored by a job, or None."""
    return session.execute(select(Result).where(Result.job_id == job_id)).scalar_one_or_none()


def list_results(*, session: Session, limit: int = 50) -> list[ResultRow]:
    """Return the current (non-superseded) results, newest first, with their report's state.

    The report's state follows :func:`db.overview.report_status`, as the console shows it.
    """
    statement = (
        select(
            Study.study_instance_uid,
            Series.series_instance_uid,
            Series.series_description,
            Job.instance_count,
            Result.probability,
            Result.suspected,
            Result.threshold,
            Result.model_version,
            Job.status,
            Result.created_at,
            Result.id,
            Job.id,
            Result.shadow,
        )
        .join(Job, Result.job_id == Job.id)
        .join(Series, Result.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .where(Result.superseded.is_(False))
        .order_by(Result.created_at.desc(), Result.id.desc())
        .limit(limit)
    )
    rows = session.execute(statement).all()
    reports = report_statuses(session, [row[10] for row in rows])

    return [
        ResultRow(
            study_instance_uid=row[0],
            series_instance_uid=row[1],
            series_description=row[2],
            instance_count=row[3],
            probability=row[4],
            suspected=row[5],
            threshold=row[6],
            model_version=row[7],
            job_status=row[8],
            created_at=row[9],
            export_status=reports.get(row[10]),
            result_id=row[10],
            job_id=row[11],
            shadow=row[12],
        )
        for row in rows
    ]
