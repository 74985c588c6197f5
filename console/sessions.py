"""Database sessions for the admin commands: migrated for those that write, checked for readers."""

from __future__ import annotations

from console.errors import SchemaNotReadyError
from db.engine import (
    SessionFactory,
    check_revision,
    create_engine_for,
    make_session_factory,
    migrate,
)
from db.errors import SchemaRevisionError


def writing_sessions(database_url: str) -> SessionFactory:
    """Sessions for a command that writes: the schema is brought up to date first."""
    engine = create_engine_for(database_url)
    migrate(engine)
    return make_session_factory(engine)


def read_only_sessions(database_url: str) -> SessionFactory:
    """Sessions for a command that only reads: the schema is checked, never migrated.

    Raises:
        SchemaNotReadyError: The schema is behind (or ahead of) this version.
    """
    engine = create_engine_for(database_url)
    try:
        check_revision(engine)
    except SchemaRevisionError as exc:
        engine.dispose()
        current = "no revision (never migrated)" if exc.current is None else exc.current
        raise SchemaNotReadyError(
            f"The database schema is at {current}, this version needs {exc.needed}: "
            "run `stroke-triage migrate` or start the service once."
        ) from exc
    return make_session_factory(engine)
