"""Fixtures for the database tests: one migrated database per module, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from db.engine import Engine, SessionFactory, create_engine_for, make_session_factory
from tests.helpers import migrated_postgres_schema, migrated_sqlite


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A migrated database: a new SQLite file, or a new PostgreSQL schema, for this module."""
    if request.param == "sqlite":
        engine = create_engine_for(migrated_sqlite(tmp_path_factory.mktemp("db") / "triage.db"))
        yield engine
        engine.dispose()
        return
    with migrated_postgres_schema("st_test") as url:
        engine = create_engine_for(url)
        try:
            yield engine
        finally:
            engine.dispose()


#: Every table, children first: a test that needs an empty database deletes them in this order.
TABLES = (
    "outcome_changes",
    "outcomes",
    "notifications",
    "exports",
    "result_findings",
    "slice_scores",
    "challenger_result_findings",
    "challenger_results",
    "results",
    "jobs",
    "instances",
    "series",
    "studies",
)


@pytest.fixture
def sessions(engine: Engine) -> Iterator[SessionFactory]:
    """Sessions on this module's database, emptied first."""
    with engine.begin() as connection:
        for table in TABLES:
            connection.execute(text(f"DELETE FROM {table}"))
    yield make_session_factory(engine)
