"""The dashboard in real headless Chromium (Debian chromium + chromium-driver, via Selenium).

Screenshots of every page are kept under tests/artifacts/dashboard/ (git-ignored).
"""

from __future__ import annotations

import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import db.tokens
from db.engine import create_engine_for, make_session_factory, migrate
from db.enums import TokenScope
from stroke_triage.api.config import ApiConfig
from stroke_triage.api.server import BackgroundConsole
from stroke_triage.api.tokens import new_token, token_sha256
from stroke_triage.settings import Settings
from tests.api.seed import Seeded, seed
from tests.helpers import REPO_ROOT, free_port, require_peer, wait_until

ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "dashboard"
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        require_peer("Chromium", "apt-get install chromium chromium-driver.")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chrome'}"]:
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    yield chrome
    chrome.quit()


def _shot(browser: object, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))  # type: ignore[attr-defined]


def test_login_worklist_series_and_requeue(browser: object, tmp_path: Path, redis_url: str) -> None:
    from selenium.webdriver.common.by import By

    url = f"sqlite:///{tmp_path / 'dash.db'}"
    migrate(url)
    engine = create_engine_for(url)
    factory = make_session_factory(engine)
    # Recent, so that the suspected series is on top of the worklist.
    seeded: Seeded = seed(factory, base=datetime.now(UTC) - timedelta(hours=1))
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
        task_queue=f"test-dash-{uuid.uuid4().hex[:8]}",
        api=ApiConfig(port=port, refresh_s=0),
    )
    console = BackgroundConsole(settings)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return urllib.request.urlopen(f"{base}/health", timeout=1).status == 200
        except OSError:
            return False

    try:
        wait_until(up, timeout_s=20)
        browser.get(f"{base}/")  # type: ignore[attr-defined]
        assert "/login" in browser.current_url  # type: ignore[attr-defined]
        _shot(browser, "1-login")
        browser.find_element(By.ID, "token").send_keys(token)  # type: ignore[attr-defined]
        browser.find_element(By.ID, "login-button").click()  # type: ignore[attr-defined]
        table = browser.find_element(By.ID, "worklist")  # type: ignore[attr-defined]
        first = table.find_elements(By.CSS_SELECTOR, "tbody tr")[0]
        assert "SUSPECTED" in first.text and "0.910" in first.text
        _shot(browser, "2-worklist")

        cookie = browser.get_cookie("stroke_triage_session")  # type: ignore[attr-defined]
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"

        browser.get(f"{base}/series/{seeded.done_series}")  # type: ignore[attr-defined]
        assert browser.find_element(By.CSS_SELECTOR, "svg.chart")  # type: ignore[attr-defined]
        _shot(browser, "3-series")

        browser.get(f"{base}/failures")  # type: ignore[attr-defined]
        dead = browser.find_element(By.ID, "dead-jobs")  # type: ignore[attr-defined]
        dead.find_element(By.CSS_SELECTOR, "a").click()
        _shot(browser, "4-failed-series")
        browser.find_element(By.ID, f"requeue-{seeded.failed_job}").click()  # type: ignore[attr-defined]
        message = browser.find_element(By.ID, "message").text  # type: ignore[attr-defined]
        assert "Queued again" in message
        statuses = browser.find_elements(By.CSS_SELECTOR, "#jobs .job-status")  # type: ignore[attr-defined]
        assert statuses[0].text == "queued"
        _shot(browser, "5-requeued")

        browser.get(f"{base}/stats")  # type: ignore[attr-defined]
        _shot(browser, "6-stats")
    finally:
        console.stop()
        engine.dispose()
