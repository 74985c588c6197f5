"""Engines, sessions and programmatic Alembic migrations.

Alembic is imported only by :func:`migrate`: read-only commands check the schema revision with
a plain query, and so start without loading it (about 0.2 s).
"""

from __future__ import annotations

import fcntl
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import Connection, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from db.errors import MigrationError, SchemaRevisionError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEAD_REVISION",
    "Engine",
    "Session",
    "SessionFactory",
    "check_revision",
    "create_engine_for",
    "current_revision",
    "make_session_factory",
    "migrate",
]

logger = logging.getLogger(__name__)

#: A factory of database sessions; ``with factory() as session:`` opens one.
SessionFactory: TypeAlias = sessionmaker[Session]

#: Revision id of the newest migration shipped with this package.
HEAD_REVISION = "0017"

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: SQLite waits this long for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: Alembic's table of applied revisions (its default name, in the connection's default schema).
VERSION_TABLE = "alembic_version"

#: Key of the PostgreSQL advisory lock held while migrating ("strtriag" in ASCII).
MIGRATION_LOCK_KEY = 0x7374727472696167

_thread_lock = threading.Lock()


def _normalize_url(url: str | URL) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


#: Query parameters of a database URL that may hold a secret (libpq takes ``password=`` there).
_SECRET_PARAMETER = re.compile(r"password|secret|token|key", re.IGNORECASE)


def masked_url(url: str) -> str:
    """``url`` as SQLAlchemy renders it with the password hidden (``***``), and every query
    parameter that may hold a secret too; the others (``sslmode``) are kept."""
    parsed = make_url(url)
    query = {
        name: "***" if _SECRET_PARAMETER.search(name) else value
        for name, value in parsed.query.items()
    }
    return parsed.set(query=query).render_as_string(hide_password=True)


def _is_memory_sqlite(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url.database)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def create_engine_for(url: str | URL) -> Engine:
    """Create an engine configured for concurrent use by the listener and the workers.

    SQLite gets WAL, a 30 s busy timeout, foreign keys and ``synchronous=NORMAL``; the folder of
    the database file is created when missing, and an in-memory database is shared by all
    sessions of the engine. ``postgresql://`` is rewritten to use psycopg 3.

    Args:
        url: SQLAlchemy database URL.

    Returns:
        The engine.
    """
    parsed = _normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    if _is_memory_sqlite(parsed):
        engine = create_engine(parsed, connect_args=connect_args, poolclass=StaticPool)
    else:
        database = str(parsed.database)
        if not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)
    event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def make_session_factory(engine: Engine) -> SessionFactory:
    """Return a session factory whose objects stay usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def _alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Serialize migrations between threads and processes sharing one database."""
    with _thread_lock:
        if engine.dialect.name == "postgresql":
            with engine.connect() as lock_connection:
                lock_connection.execute(
                    text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                lock_connection.commit()
                try:
                    yield
                finally:
                    lock_connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                    lock_connection.commit()
        elif engine.dialect.name == "sqlite" and not _is_memory_sqlite(engine.url):
            lock_path = Path(str(engine.url.database)).expanduser()
            lock_path = lock_path.with_name(lock_path.name + ".migrate.lock")
            with lock_path.open("a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)
        else:
            yield


def migrate(url_or_engine: str | URL | Engine) -> None:
    """Upgrade the database to the newest schema (``alembic upgrade head``).

    Safe to call from several processes at once: PostgreSQL migrations run under an advisory
    lock, SQLite migrations under a lock file next to the database.

    Args:
        url_or_engine: Database URL or engine.

    Raises:
        MigrationError: The upgrade failed.
    """
    if isinstance(url_or_engine, Engine):
        engine, owned = url_or_engine, False
    else:
        engine, owned = create_engine_for(url_or_engine), True
    try:
        with _migration_lock(engine), engine.connect() as connection:
            before = _read_revision(connection)
            connection.rollback()
            if before == HEAD_REVISION:
                # The common start-up: nothing to upgrade, so Alembic is not even imported.
                logger.debug("Database schema at %s.", HEAD_REVISION)
                return
            from alembic import command

            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
            logger.info("Database schema at %s (was %s).", HEAD_REVISION, before)
    except SQLAlchemyError as exc:
        raise MigrationError(f"The database schema could not be upgraded: {exc}") from exc
    finally:
        if owned:
            engine.dispose()


def _read_revision(connection: Connection) -> str | None:
    """What Alembic's ``get_current_revision`` reads, without importing Alembic.

    Several rows (branches, which this project never creates) come back joined with commas, so
    that they never equal one revision.
    """
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if not rows:
        return None
    return ",".join(sorted(str(row) for row in rows))


def current_revision(engine: Engine) -> str | None:
    """Return the schema revision of the database, or None before the first migration."""
    with engine.connect() as connection:
        return _read_revision(connection)


def check_revision(engine: Engine) -> None:
    """Make sure the database schema is at :data:`HEAD_REVISION`, without migrating it.

    For read-only use: a schema upgrade is left to ``migrate``.

    Raises:
        SchemaRevisionError: The schema is at another revision, or was never created.
    """
    current = current_revision(engine)
    if current != HEAD_REVISION:
        raise SchemaRevisionError(current=current, needed=HEAD_REVISION)
