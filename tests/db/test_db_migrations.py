"""Alembic migrations: from empty to head on SQLite and PostgreSQL, matching the models."""

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    Numeric,
    func,
    inspect,
    select,
    text,
)

from db.engine import (
    HEAD_REVISION,
    MIGRATIONS_DIR,
    _alembic_config,
    check_revision,
    create_engine_for,
    current_revision,
    migrate,
)
from db.errors import SchemaRevisionError
from db.models import Base
from tests.helpers import postgres_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nested' / 'triage.db'}"
        return
    with postgres_schema("st_test") as url:
        yield url


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_head_revision_constant_matches_scripts() -> None:
    script = ScriptDirectory.from_config(_alembic_config())
    assert script.get_current_head() == HEAD_REVISION
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()


def test_migrate_from_empty_matches_models(empty_db_url: str) -> None:
    engine = create_engine_for(empty_db_url)
    try:
        assert current_revision(engine) is None
        migrate(engine)
        assert current_revision(engine) == HEAD_REVISION
        assert _differences(engine) == []
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) | {"alembic_version"} == tables
    finally:
        engine.dispose()


def test_migrate_twice_is_a_no_op(empty_db_url: str) -> None:
    migrate(empty_db_url)
    engine = create_engine_for(empty_db_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO studies (study_instance_uid, created_at) VALUES ('1.2.3', :t)"),
                {"t": "2026-01-01 00:00:00"},
            )
        migrate(engine)
        assert current_revision(engine) == HEAD_REVISION
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM studies")).scalar_one() == 1
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [row[0] for row in versions] == [HEAD_REVISION]
    finally:
        engine.dispose()


def test_concurrent_migrations_on_a_fresh_database_both_succeed(empty_db_url: str) -> None:
    # Separate processes, as the listener and a worker starting together.
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(migrate, empty_db_url) for _ in range(2)]
        for future in futures:
            future.result(timeout=120)
    engine = create_engine_for(empty_db_url)
    try:
        assert current_revision(engine) == HEAD_REVISION
        assert _differences(engine) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'triage.db'}"
    engine = create_engine_for(url)
    try:
        migrate(engine)
        with engine.connect() as connection:
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
            connection.commit()
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        migrate(engine)
        assert _differences(engine) == []
    finally:
        engine.dispose()


def test_check_revision_refuses_an_old_or_empty_schema(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'triage.db'}")
    try:
        with pytest.raises(SchemaRevisionError) as empty:
            check_revision(engine)
        assert (empty.value.current, empty.value.needed) == (None, HEAD_REVISION)
        config = _alembic_config()
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.commit()
        with pytest.raises(
            SchemaRevisionError, match=f"at 0001, this version needs {HEAD_REVISION}"
        ):
            check_revision(engine)
        migrate(engine)
        check_revision(engine)
    finally:
        engine.dispose()


def _one_row_in_every_table(connection: Connection) -> dict[str, int]:
    """Insert one row, id 1, into every table (parents first), with a value for each column
    that needs one; return the tables' row counts."""
    metadata = MetaData()
    metadata.reflect(connection)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for table in metadata.sorted_tables:
        if table.name == "alembic_version":
            continue
        row: dict[str, object] = {}
        for column in table.columns:
            if column.foreign_keys or column.primary_key:
                row[column.name] = 1
            elif column.nullable or column.server_default is not None:
                continue
            elif isinstance(column.type, DateTime):
                row[column.name] = now
            elif isinstance(column.type, Boolean):
                row[column.name] = False
            elif isinstance(column.type, Integer | Float | Numeric):
                row[column.name] = 1
            else:
                length = getattr(column.type, "length", None) or 64
                row[column.name] = f"{table.name}-{column.name}"[:length]
        connection.execute(table.insert().values(**row))
    return {
        table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
        for table in metadata.sorted_tables
    }


def test_an_upgrade_keeps_every_row_of_a_populated_database(empty_db_url: str) -> None:
    # On SQLite an ALTER that copies a table dropped the original with foreign keys on, and
    # ON DELETE CASCADE emptied slice_scores, exports and notifications (revisions 0009, 0013).
    engine = create_engine_for(empty_db_url)
    try:
        with engine.connect() as connection:
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "0008")
            connection.commit()
            before = _one_row_in_every_table(connection)
            connection.commit()
        assert before["slice_scores"] == before["exports"] == before["notifications"] == 1
        migrate(engine)
        with engine.connect() as connection:
            after = {
                name: connection.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()
                for name in before
            }
        assert after == before
        with engine.connect() as connection:
            # The rows made before 0009 carry the old checkpoints' finding (its backfill) ...
            names = connection.execute(text("SELECT finding_name FROM results")).scalars().all()
            assert names == ["stroke"]
            # ... and no default is left for a row written without one (revision 0016).
            metadata = MetaData()
            metadata.reflect(connection, only=["results", "challenger_results"])
            for name in ("results", "challenger_results"):
                table = metadata.tables[name]
                defaults = {c.name: c.server_default for c in table.columns if "finding" in c.name}
                assert len(defaults) == 4 and set(defaults.values()) == {None}, defaults
    finally:
        engine.dispose()
