"""Alembic environment, configured programmatically by ``db.engine.migrate``."""

from alembic import context
from sqlalchemy import Connection

from db.engine import create_engine_for
from db.models import Base


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite and connection.in_transaction():
        raise RuntimeError(
            "SQLite migrations must start outside a transaction (foreign keys are turned off "
            "around them): pass a connection from engine.connect(), as db.engine.migrate does."
        )
    if sqlite:
        # SQLite alters a table by copying it and dropping the original; with foreign keys on
        # (every connection of db.engine turns them on), that DROP deletes every referencing
        # row through ON DELETE CASCADE: an upgrade would empty slice_scores, exports and
        # notifications. SQLite's own advice (ALTER TABLE, "making other kinds of table schema
        # changes"): foreign keys off around the change, then foreign_key_check. The pragma is
        # a no-op inside a transaction, so it is set before one begins.
        connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    try:
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(
                        f"The migration left {len(broken)} row(s) whose foreign key points at "
                        f"nothing (first: {tuple(broken[0])}); it was rolled back."
                    )
    finally:
        if sqlite:
            connection.commit()
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")
            connection.commit()


def run_migrations_online() -> None:
    """Run migrations on the connection handed over by ``migrate``, or on ``sqlalchemy.url``."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("Alembic needs either a connection attribute or sqlalchemy.url.")
    engine = create_engine_for(url)
    try:
        with engine.connect() as new_connection:
            _run(new_connection)
            new_connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("Offline (SQL script) migrations are not supported.")
run_migrations_online()
