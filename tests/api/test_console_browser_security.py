"""The console's defences in real headless Chromium (issue 23).

- CSRF: a page on another port of the same host posts a form to the API while the admin is
  logged in to the dashboard. SameSite=Strict does not stop it (same site); the API refuses it
  because actions take a bearer token only.
- The CSP (``default-src 'self'``, no inline script or style) lets every page render, Swagger UI
  included, served from the console itself: Chromium reports no violation.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import db.jobs
import db.tokens
from console.config import ApiConfig
from console.server import BackgroundConsole
from console.tokens import new_token, token_sha256
from db.engine import SessionFactory, create_engine_for, make_session_factory, migrate
from db.enums import JobStatus, TokenScope
from stroke_triage.settings import Settings
from tests.api.browser import click_through, screenshot
from tests.api.seed import Seeded, seed
from tests.helpers import free_port


@dataclass
class RunningConsole:
    base: str
    factory: SessionFactory
    seeded: Seeded
    token: str


@pytest.fixture
def running(tmp_path: Path, redis_url: str) -> Iterator[RunningConsole]:
    url = f"sqlite:///{tmp_path / 'console.db'}"
    migrate(url)
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


def _log_in(browser: Any, running: RunningConsole) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{running.base}/login")
    browser.find_element(By.ID, "token").send_keys(running.token)
    click_through(browser, browser.find_element(By.ID, "login-button"))
    assert browser.find_element(By.ID, "worklist")


def _attacker_site(page: str) -> ThreadingHTTPServer:
    body = page.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_form_on_another_port_cannot_requeue_with_the_admins_cookie(
    browser: Any, running: RunningConsole
) -> None:
    from selenium.webdriver.common.by import By

    _log_in(browser, running)
    target = f"{running.base}/api/jobs/{running.seeded.failed_job}/requeue"
    evil = _attacker_site(
        f'<!doctype html><title>Prize</title><form method="post" action="{target}">'
        '<button id="prize" type="submit">Claim your prize</button></form>'
    )
    try:
        browser.get(f"http://127.0.0.1:{evil.server_address[1]}/")
        click_through(browser, browser.find_element(By.ID, "prize"))
        answer = browser.find_element(By.TAG_NAME, "body").text
        screenshot(browser, "csrf-refused")
    finally:
        evil.shutdown()
    assert "bearer token" in answer and "not accepted here" in answer, answer
    with running.factory() as session:
        job = db.jobs.get_job(session=session, job_id=running.seeded.failed_job)
        assert job.status is JobStatus.FAILED


def _csp_violations(browser: Any) -> list[str]:
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]
    ]


def test_every_page_renders_under_the_csp_swagger_ui_included(
    browser: Any, running: RunningConsole
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _log_in(browser, running)
    for path, name in (
        ("/", "csp-worklist"),
        (f"/series/{running.seeded.done_series}", "csp-series"),
        ("/failures", "csp-failures"),
        ("/stats", "csp-stats"),
    ):
        browser.get(f"{running.base}{path}")
        header = browser.find_element(By.CSS_SELECTOR, "header.top")
        # The stylesheet applied: the header's dark background comes from /static/console.css.
        assert header.value_of_css_property("background-color") == "rgba(31, 45, 61, 1)"
        screenshot(browser, name)
    browser.get(f"{running.base}/docs")
    WebDriverWait(browser, 20).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    )
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/api/series", "/api/jobs/{job_id}/requeue"} <= paths, paths
    assert browser.find_element(By.CSS_SELECTOR, ".btn.authorize")
    screenshot(browser, "csp-docs")
    assert _csp_violations(browser) == []
