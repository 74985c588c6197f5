"""The dashboard in real headless Chromium (Debian chromium + chromium-driver, via Selenium).

Screenshots of every page are kept under tests/artifacts/dashboard/ (git-ignored).
"""

from __future__ import annotations

import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import db.tokens
from console.config import ApiConfig
from console.server import BackgroundConsole
from console.tokens import new_token, token_sha256
from db.engine import create_engine_for, make_session_factory, migrate
from db.enums import TokenScope
from stroke_triage.settings import Settings
from tests.api.browser import click_through, screenshot
from tests.api.seed import Seeded, seed
from tests.helpers import free_port, wait_until


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
    console = BackgroundConsole(settings.console_runtime())
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
        screenshot(browser, "1-login")
        browser.find_element(By.ID, "token").send_keys(token)  # type: ignore[attr-defined]
        click_through(browser, browser.find_element(By.ID, "login-button"))  # type: ignore[attr-defined]
        table = browser.find_element(By.ID, "worklist")  # type: ignore[attr-defined]
        first = table.find_elements(By.CSS_SELECTOR, "tbody tr")[0]
        assert "SUSPECTED" in first.text and "0.910" in first.text
        screenshot(browser, "2-worklist")

        cookie = browser.get_cookie("stroke_triage_session")  # type: ignore[attr-defined]
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"

        browser.get(f"{base}/series/{seeded.done_series}")  # type: ignore[attr-defined]
        assert browser.find_element(By.CSS_SELECTOR, "svg.chart")  # type: ignore[attr-defined]
        screenshot(browser, "3-series")

        browser.get(f"{base}/failures")  # type: ignore[attr-defined]
        dead = browser.find_element(By.ID, "dead-jobs")  # type: ignore[attr-defined]
        click_through(browser, dead.find_element(By.CSS_SELECTOR, "a"))
        screenshot(browser, "4-failed-series")
        requeue = browser.find_element(By.ID, f"requeue-{seeded.failed_job}")  # type: ignore[attr-defined]
        click_through(browser, requeue)
        message = browser.find_element(By.ID, "message").text  # type: ignore[attr-defined]
        assert "Queued again" in message
        statuses = browser.find_elements(By.CSS_SELECTOR, "#jobs .job-status")  # type: ignore[attr-defined]
        assert statuses[0].text == "queued"
        screenshot(browser, "5-requeued")

        browser.get(f"{base}/stats")  # type: ignore[attr-defined]
        screenshot(browser, "6-stats")

        # Logging out ends the session on the server: the old cookie, put back, is refused.
        click_through(browser, browser.find_element(By.ID, "logout-button"))  # type: ignore[attr-defined]
        assert "/login" in browser.current_url  # type: ignore[attr-defined]
        browser.add_cookie(  # type: ignore[attr-defined]
            {"name": cookie["name"], "value": cookie["value"], "path": "/"}
        )
        browser.get(f"{base}/")  # type: ignore[attr-defined]
        assert "/login" in browser.current_url  # type: ignore[attr-defined]
        assert browser.find_element(By.ID, "login-button")  # type: ignore[attr-defined]
        screenshot(browser, "7-logged-out")
    finally:
        console.stop()
        engine.dispose()
