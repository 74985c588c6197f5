"""Challenger results: a second model's verdict on a series, stored beside the live result.

Every function takes the caller's ``session``, flushes, and never commits. A challenger result
never supersedes anything and is never exported.
"""

import logging
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from db._query import insert, utc
from db.findings import FindingScore, insert_further_findings
from db.jobs import get_job
from db.models import ChallengerFinding, ChallengerResult
from db.results import Verdict

logger = logging.getLogger(__name__)


def find_challenger_result(
    *, session: Session, job_id: int, input_fingerprint: str, model_sha256: str
) -> int | None:
    """Id of the challenger result of the job's series for these instances and model, or None.

    Raises:
        NotFoundError: No such job.
    """
    job = get_job(session=session, job_id=job_id)
    return session.execute(
        select(ChallengerResult.id).where(
            ChallengerResult.series_id == job.series_id,
            ChallengerResult.input_fingerprint == input_fingerprint,
            ChallengerResult.model_sha256 == model_sha256,
        )
    ).scalar_one_or_none()


def record_challenger_result(
    *,
    session: Session,
    job_id: int,
    verdict: Verdict,
    further_findings: Sequence[FindingScore] = (),
    now: datetime | None = None,
) -> int:
    """Store a challenger's verdict once per (series, instances, model); return its id.

    Args:
        session: Database session.
        job_id: The job whose series the challenger read.
        verdict: The challenger's verdict and provenance.
        further_findings: A multi-output challenger's other findings, in its spec's order
            (stored with the verdict, as the live result's are).
        now: Current time.

    Raises:
        NotFoundError: No such job.
    """
    job = get_job(session=session, job_id=job_id)
    inserted = session.execute(
        insert(session, ChallengerResult)
        .values(
            job_id=job.id,
            series_id=job.series_id,
            **asdict(verdict),
            created_at=utc(now),
        )
        .on_conflict_do_nothing()
        .returning(ChallengerResult.id)
    ).scalar_one_or_none()
    if inserted is not None:  # else stored before, with its findings
        insert_further_findings(
            session, ChallengerFinding, further_findings, challenger_result_id=inserted
        )
    session.flush()
    found = find_challenger_result(
        session=session,
        job_id=job_id,
        input_fingerprint=verdict.input_fingerprint,
        model_sha256=verdict.model_sha256,
    )
    assert found is not None, "the challenger result was just inserted"
    logger.info(
        "Challenger result %s stored for job %s (model %s, p=%.3f)",
        found,
        job_id,
        verdict.model_version,
        verdict.probability,
    )
    return found
