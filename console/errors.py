"""Errors of the console and the admin commands: each is printed as one clear message."""


class ConsoleError(Exception):
    """Base class of the console's errors."""


class SchemaNotReadyError(ConsoleError):
    """The database schema is not the one this version reads; a migration is due."""


class ConsoleStartError(ConsoleError):
    """The console cannot serve as configured (port taken, plain HTTP in public, bad TLS files)."""
