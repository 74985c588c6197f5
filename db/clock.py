"""The one set of UTC time helpers: every stored and compared time is an aware UTC datetime.

The database keeps times in UTC (naive on SQLite, ``timestamptz`` on PostgreSQL); the listener
and the worker compare them with the current time. Both take them from here.
"""

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, as an aware UTC datetime."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def utc(now: datetime | None) -> datetime:
    """``now`` as an aware UTC datetime (see :func:`as_utc`); None is the current time."""
    return utcnow() if now is None else as_utc(now)
