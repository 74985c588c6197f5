"""Exceptions raised by the db package."""


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
