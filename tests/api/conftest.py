"""Fixtures for the admin console tests: a migrated database on SQLite and PostgreSQL, a browser."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import db.tokens
from console.app import create_app
from console.config import ApiConfig
from console.server import BackgroundConsole
from console.tokens import new_token, token_sha256
from db.engine import Engine, SessionFactory, create_engine_for, make_session_factory
from db.enums import TokenScope
from stroke_triage.settings import Settings
from tests.api.browser import CHROME_FLAGS, PAGE_LOAD_TIMEOUT_S, RunningConsole
from tests.api.seed import Seeded, seed
from tests.helpers import free_port, migrated_postgres_schema, migrated_sqlite, require_peer


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a migrated, empty database: a new SQLite file or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield migrated_sqlite(tmp_path / "console.db")
        return
    with migrated_postgres_schema("st_api") as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine_for(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> SessionFactory:
    return make_session_factory(engine)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """Debian's headless Chromium through chromedriver (no browser download)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        require_peer("Chromium", "apt-get install chromium chromium-driver.")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chrome'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP reports land there
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    # Lookups wait for a page still loading; absence is asserted with tests.api.browser.absent,
    # never with a lookup (which would wait all that time for nothing).
    chrome.implicitly_wait(PAGE_LOAD_TIMEOUT_S)
    yield chrome
    chrome.quit()


@pytest.fixture
def tokens(factory: SessionFactory) -> dict[str, str]:
    made = {}
    with factory() as session:
        for name, scope in (("reader", TokenScope.READ), ("ops", TokenScope.ADMIN)):
            made[name] = new_token()
            db.tokens.create_token(
                session=session, name=name, scope=scope, token_sha256=token_sha256(made[name])
            )
        session.commit()
    return made


@pytest.fixture
def seeded(factory: SessionFactory) -> Seeded:
    return seed(factory)


@pytest.fixture
def client(database_url: str, tmp_path: Path, redis_url: str) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url=redis_url,
        task_queue=f"test-api-{uuid.uuid4().hex[:8]}",
    )
    with TestClient(create_app(settings.console_runtime())) as test_client:
        yield test_client


@pytest.fixture
def running(tmp_path: Path, redis_url: str) -> Iterator[RunningConsole]:
    """A console in a thread on a free port, its database seeded an hour ago, one admin token."""
    url = migrated_sqlite(tmp_path / "console.db")
    engine = create_engine_for(url)
    factory = make_session_factory(engine)
    seeded = seed(factory, base=datetime.now(UTC) - timedelta(hours=1))
    token = new_token()
    with factory() as session:
        db.tokens.create_token(
            session=session, name="ops", scope=TokenScope.ADMIN, token_sha256=token_sha256(token)
        )
        session.commit()
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        broker_url=redis_url,
        task_queue=f"test-csrf-{uuid.uuid4().hex[:8]}",
        api=ApiConfig(port=port, refresh_s=0),
    )
    console = BackgroundConsole(settings.console_runtime())
    try:
        yield RunningConsole(f"http://127.0.0.1:{port}", factory, seeded, token)
    finally:
        console.stop()
        engine.dispose()
