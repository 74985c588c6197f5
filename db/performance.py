"""What live performance monitoring reads: scored series with their outcome and attributes.

Every function takes the caller's ``session``, flushes, and never commits.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db._query import utc
from db.enums import OutcomeKey
from db.models import ChallengerResult, Outcome, Result, Series, Study

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredSeries:
    """One model's verdict on one series, with the series' outcome (None: no outcome yet).

    ``role`` is ``live``, ``shadow`` (a live-model result made in shadow mode) or ``challenger``.
    """

    series_instance_uid: str
    study_instance_uid: str
    model_name: str
    model_version: str
    model_sha256: str
    role: str
    probability: float
    suspected: bool
    threshold: float
    created_at: datetime
    stroke: bool | None
    manufacturer: str | None
    convolution_kernel: str | None
    slice_thickness_mm: float | None


def record_series_attributes(
    *,
    session: Session,
    series_instance_uid: str,
    manufacturer: str | None,
    convolution_kernel: str | None,
    slice_thickness_mm: float | None,
    accession_hmac: str | None,
) -> None:
    """Record the acquisition attributes of a series and its study's hashed accession number.

    An unknown series is ignored (there is nothing to describe).
    """
    session.execute(
        update(Series)
        .where(Series.series_instance_uid == series_instance_uid)
        .values(
            manufacturer=None if manufacturer is None else manufacturer[:64],
            convolution_kernel=None if convolution_kernel is None else convolution_kernel[:64],
            slice_thickness_mm=slice_thickness_mm,
        )
    )
    if accession_hmac:
        study_id = select(Series.study_id).where(Series.series_instance_uid == series_instance_uid)
        session.execute(
            update(Study)
            .where(Study.id.in_(study_id.scalar_subquery()))
            .values(accession_hmac=accession_hmac)
        )
    session.flush()


def scored_series(
    *, session: Session, since: datetime | None = None, model_version: str | None = None
) -> list[ScoredSeries]:
    """Every current verdict (live, shadow and challenger), newest input per series and model.

    Args:
        session: Database session.
        since: Only verdicts made at or after this time.
        model_version: Only this model version.
    """
    columns = (
        Series.series_instance_uid,
        Study.study_instance_uid,
        Study.accession_hmac,
        Study.accession_sha256,
        Series.manufacturer,
        Series.convolution_kernel,
        Series.slice_thickness_mm,
    )
    live = (
        select(Result, *columns)
        .join(Series, Result.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .where(Result.superseded.is_(False))
    )
    challenger = (
        select(ChallengerResult, *columns)
        .join(Series, ChallengerResult.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .order_by(ChallengerResult.created_at, ChallengerResult.id)
    )
    if since is not None:
        live = live.where(Result.created_at >= utc(since))
        challenger = challenger.where(ChallengerResult.created_at >= utc(since))
    if model_version is not None:
        live = live.where(Result.model_version == model_version)
        challenger = challenger.where(ChallengerResult.model_version == model_version)
    outcomes = {
        (row.key_kind, row.key_value): row.stroke
        for row in session.execute(select(Outcome)).scalars()
    }

    def outcome(study_uid: str, accession: str | None, legacy: str | None) -> bool | None:
        found = outcomes.get((OutcomeKey.STUDY, study_uid))
        if found is None and accession:
            found = outcomes.get((OutcomeKey.ACCESSION, accession))
        if found is None and legacy:  # neither rekeyed yet (no worker has started since 0010)
            found = outcomes.get((OutcomeKey.LEGACY_ACCESSION, legacy))
        return found

    # One verdict per series and model identity (name, version, weights) and role: a calibrated
    # copy shares its source's weights but not its version, and is a model of its own.
    found: dict[tuple[str, str, str, str, str], ScoredSeries] = {}
    for statement, kind in ((live, "live"), (challenger, "challenger")):
        for row in session.execute(statement):
            verdict = row[0]
            role = "shadow" if kind == "live" and verdict.shadow else kind
            # Later rows (newer challenger inputs) replace earlier ones of the same series.
            key = (
                row.series_instance_uid,
                verdict.model_name,
                verdict.model_version,
                verdict.model_sha256,
                role,
            )
            found[key] = ScoredSeries(
                series_instance_uid=row.series_instance_uid,
                study_instance_uid=row.study_instance_uid,
                model_name=verdict.model_name,
                model_version=verdict.model_version,
                model_sha256=verdict.model_sha256,
                role=role,
                probability=verdict.probability,
                suspected=verdict.suspected,
                threshold=verdict.threshold,
                created_at=verdict.created_at,
                stroke=outcome(row.study_instance_uid, row.accession_hmac, row.accession_sha256),
                manufacturer=row.manufacturer,
                convolution_kernel=row.convolution_kernel,
                slice_thickness_mm=row.slice_thickness_mm,
            )
    return list(found.values())
