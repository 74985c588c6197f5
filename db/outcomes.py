"""Outcomes: the radiologists' ground truth per study or accession number, and its history.

Every function takes the caller's ``session``, flushes, and never commits. Importing the same
outcomes again changes nothing; a changed label is updated and the change recorded with its time.
Accession numbers are stored only as their sha256 (:func:`accession_sha256`).
"""

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db._query import utc
from db.enums import OutcomeKey
from db.models import Outcome, OutcomeChange

logger = logging.getLogger(__name__)


def accession_sha256(accession_number: str) -> str:
    """The sha256 (hex) of an Accession Number, stripped of padding spaces."""
    return hashlib.sha256(accession_number.strip().encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class OutcomeRecord:
    """One study's ground truth: ``key`` names what ``value`` is (a UID or an accession hash)."""

    key: OutcomeKey
    value: str
    stroke: bool


@dataclass(frozen=True)
class OutcomeImport:
    """What an import did."""

    added: int
    changed: int
    unchanged: int


@dataclass(frozen=True)
class LabelChange:
    """One recorded change of an outcome's label."""

    previous_stroke: bool
    stroke: bool
    source: str
    changed_at: datetime


def import_outcomes(
    *,
    session: Session,
    records: Sequence[OutcomeRecord],
    source: str,
    now: datetime | None = None,
) -> OutcomeImport:
    """Insert new outcomes, update changed ones (recording the change), keep equal ones.

    Args:
        session: Database session.
        records: The outcomes; a key given twice keeps its last label.
        source: Where they came from (e.g. the file name), kept with each row.
        now: Current time.
    """
    now = utc(now)
    latest = {(record.key, record.value): record for record in records}
    added = changed = unchanged = 0
    for (key, value), record in latest.items():
        outcome = session.execute(
            select(Outcome).where(Outcome.key_kind == key, Outcome.key_value == value)
        ).scalar_one_or_none()
        if outcome is None:
            session.add(
                Outcome(
                    key_kind=key,
                    key_value=value,
                    stroke=record.stroke,
                    source=source[:256],
                    recorded_at=now,
                )
            )
            added += 1
        elif outcome.stroke == record.stroke:
            unchanged += 1
        else:
            session.add(
                OutcomeChange(
                    outcome_id=outcome.id,
                    previous_stroke=outcome.stroke,
                    stroke=record.stroke,
                    source=source[:256],
                    changed_at=now,
                )
            )
            outcome.stroke = record.stroke
            outcome.source = source[:256]
            outcome.changed_at = now
            changed += 1
    session.flush()
    logger.info("Outcomes imported: %d new, %d changed, %d unchanged", added, changed, unchanged)
    return OutcomeImport(added=added, changed=changed, unchanged=unchanged)


def label_changes(*, session: Session, key: OutcomeKey, value: str) -> list[LabelChange]:
    """The recorded label changes of one outcome, oldest first (empty if none or unknown)."""
    rows = session.execute(
        select(OutcomeChange)
        .join(Outcome, OutcomeChange.outcome_id == Outcome.id)
        .where(Outcome.key_kind == key, Outcome.key_value == value)
        .order_by(OutcomeChange.changed_at, OutcomeChange.id)
    ).scalars()
    return [
        LabelChange(row.previous_stroke, row.stroke, row.source, row.changed_at) for row in rows
    ]


def count_outcomes(*, session: Session) -> int:
    """How many studies have an outcome."""
    return int(session.execute(select(func.count(Outcome.id))).scalar_one())
