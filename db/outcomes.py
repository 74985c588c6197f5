"""Outcomes: the radiologists' ground truth per study or accession number, and its history.

Every function takes the caller's ``session``, flushes, and never commits. Importing the same
outcomes again changes nothing; a changed label is updated and the change recorded with its time.
Accession numbers are stored only as their HMAC with the site key (:func:`accession_hmac`).
"""

import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db._query import utc
from db.enums import OutcomeKey
from db.models import Outcome, OutcomeChange, Study

logger = logging.getLogger(__name__)


def accession_hmac(accession_number: str, *, key: bytes) -> str:
    """The keyed hash (hex) under which an Accession Number is stored, padding stripped.

    HMAC-SHA256 with the site key (:mod:`db.site_key`) of the number's sha256: without the
    key it cannot be reversed by hashing candidate numbers, and a bare sha256 stored before
    revision 0010 is rekeyed to the same value (:func:`rekey_legacy_accessions`).
    """
    digest = hashlib.sha256(accession_number.strip().encode("utf-8")).hexdigest()
    return _keyed(digest, key)


def _keyed(sha256_hex: str, key: bytes) -> str:
    return hmac.new(key, sha256_hex.encode("ascii"), hashlib.sha256).hexdigest()


def rekey_legacy_accessions(*, session: Session, key: bytes) -> int:
    """Replace every bare accession sha256 (stored before 0010) by its HMAC with ``key``.

    Studies' ``accession_sha256`` move to ``accession_hmac``; outcomes keyed by
    ``LEGACY_ACCESSION`` become ``ACCESSION`` (where the same accession was imported again
    since, the newer row is kept). Idempotent, and quick when nothing is left to rekey.

    Returns:
        How many rows were rekeyed.
    """
    studies = session.execute(
        select(Study).where(Study.accession_sha256.is_not(None)).with_for_update()
    ).scalars()
    count = 0
    for study in studies:
        assert study.accession_sha256 is not None
        study.accession_hmac = study.accession_hmac or _keyed(study.accession_sha256, key)
        study.accession_sha256 = None
        count += 1
    legacy = session.execute(
        select(Outcome).where(Outcome.key_kind == OutcomeKey.LEGACY_ACCESSION).with_for_update()
    ).scalars()
    for outcome in legacy:
        value = _keyed(outcome.key_value, key)
        newer = session.execute(
            select(Outcome.id).where(
                Outcome.key_kind == OutcomeKey.ACCESSION,
                Outcome.key_value == value,
                Outcome.id != outcome.id,  # another process may have rekeyed this very row
            )
        ).first()
        if newer is None:
            outcome.key_kind, outcome.key_value = OutcomeKey.ACCESSION, value
        else:
            session.delete(outcome)
        count += 1
    session.flush()
    if count:
        logger.info("Rekeyed %d stored accession hashes with the site key", count)
    return count


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
