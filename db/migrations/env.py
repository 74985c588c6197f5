"""Alembic environment, configured programmatically by ``db.engine.migrate``."""

from alembic import context
from sqlalchemy import Connection

from db.engine import create_engine_for
from db.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


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
