"""Exceptions raised by the db package, and the driver errors callers may want to catch."""

from typing import TypeAlias

from sqlalchemy.exc import (
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

#: Base of every error raised while talking to the database (SQLAlchemy's own base class).
DatabaseAccessError: TypeAlias = SQLAlchemyError

#: The database cannot be reached or is busy (connection lost, lock timeout): worth a retry.
DatabaseUnavailableError: TypeAlias = OperationalError

#: Every error after which the same statements may succeed later: the database is away or
#: busy, the connection broke, or the pool had no connection free. Any other error (a value
#: the database refuses, a constraint) comes back however often it is retried.
TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)


class DbError(Exception):
    """Base class of every error raised by the db package."""


class NotFoundError(DbError):
    """A requested row does not exist."""


class JobStateError(DbError):
    """A job cannot make the requested transition from its current status."""


class ResultConflictError(DbError):
    """A job already has a result for a different input or model."""


class MigrationError(DbError):
    """The database schema could not be brought up to date."""


class SchemaRevisionError(DbError):
    """The database schema is not at the revision this version of the code needs."""

    def __init__(self, *, current: str | None, needed: str) -> None:
        """Build the error from the database's revision (None: never migrated) and ours."""
        self.current = current
        self.needed = needed
        shown = "no revision (never migrated)" if current is None else current
        super().__init__(f"The database schema is at {shown}, this version needs {needed}.")
