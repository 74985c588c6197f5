"""The console's search index: each series' Station Name, and keyed hashes of its identifiers.

The console reads a series' first stored instance once (:mod:`console.search`) and records
here what a search matches: the Station Name in clear (a device), and the Accession Number,
the Patient ID and each part of the Patient's Name only as HMACs with a key kept outside the
database. The database therefore still holds no patient data, and a stolen copy of it answers
no "which series is this patient's" question. Every function takes the caller's ``session``,
flushes, and never commits.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from db._query import insert, utc
from db.enums import SearchTermKind
from db.models import Instance, Series, SeriesHeader, SeriesSearchTerm

#: Length of the Station Name kept (VR SH is 16 characters; some devices send more).
STATION_NAME_LENGTH = 64


@dataclass(frozen=True)
class Unindexed:
    """A series whose header is not (or no longer) in the index, and its first stored file."""

    series_id: int
    first_path: str | None
    """Stored path of its first instance, relative to the storage root (None: no instance)."""


def unindexed(*, session: Session, key_id: str, limit: int) -> list[Unindexed]:
    """Series to (re)index, newest first.

    Those never indexed; those indexed with another key (``key_id``); and those whose files
    could not be read last time but that received instances since (sent again after a purge).
    """
    first_path = (
        select(Instance.path)
        .where(Instance.series_id == Series.id)
        .order_by(Instance.id)
        .limit(1)
        .scalar_subquery()
    )
    statement = (
        select(Series.id, first_path)
        .outerjoin(SeriesHeader, SeriesHeader.series_id == Series.id)
        .where(
            or_(
                SeriesHeader.series_id.is_(None),
                SeriesHeader.key_id != key_id,
                SeriesHeader.read_ok.is_(False)
                & (Series.last_received_at > SeriesHeader.indexed_at),
            )
        )
        .order_by(Series.last_received_at.desc(), Series.id.desc())
        .limit(limit)
    )
    return [Unindexed(series_id, path) for series_id, path in session.execute(statement)]


def record_header(
    *,
    session: Session,
    series_id: int,
    station_name: str | None,
    terms: Mapping[SearchTermKind, Collection[str]],
    read_ok: bool,
    key_id: str,
    now: datetime | None = None,
) -> None:
    """Record (or replace) what the index knows of one series.

    Args:
        session: Database session.
        series_id: The series.
        station_name: Its Station Name, or None.
        terms: The keyed hashes (hex) of its identifiers, by kind; never the identifiers.
        read_ok: Whether a stored instance could be read (False: purged or unreadable).
        key_id: The id of the key the terms were hashed with.
        now: Current time.
    """
    now = utc(now)
    station = None if station_name is None else station_name.strip()[:STATION_NAME_LENGTH]
    values = {
        "station_name": station or None,
        "read_ok": read_ok,
        "key_id": key_id,
        "indexed_at": now,
    }
    session.execute(
        insert(session, SeriesHeader)
        .values(series_id=series_id, **values)
        .on_conflict_do_update(index_elements=[SeriesHeader.series_id], set_=values)
    )
    session.execute(delete(SeriesSearchTerm).where(SeriesSearchTerm.series_id == series_id))
    rows = [
        {"series_id": series_id, "kind": kind, "term_hmac": term}
        for kind, hashes in terms.items()
        for term in sorted(set(hashes))
    ]
    if rows:
        # Another console indexing the same series at once writes the same rows.
        session.execute(insert(session, SeriesSearchTerm).values(rows).on_conflict_do_nothing())
    session.flush()
