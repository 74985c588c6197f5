"""The console's defences in real headless Chromium (issue 23).

- CSRF: a page on another port of the same host posts a form to the API while the admin is
  logged in to the dashboard. SameSite=Strict does not stop it (same site); the API refuses it
  because actions take a bearer token only.
- The CSP (``default-src 'self'``, no inline script or style) lets every page render, Swagger UI
  included, served from the console itself: Chromium reports no violation.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import db.jobs
from db.enums import JobStatus
from tests.api.browser import RunningConsole, click_through, log_in, screenshot
from tests.helpers import free_port


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

    log_in(browser, running)
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

    log_in(browser, running)
    for path, name in (
        ("/", "csp-worklist"),
        (f"/series/{running.seeded.done_series}", "csp-series"),
        ("/failures", "csp-failures"),
        ("/stats", "csp-stats"),
        ("/status", "csp-status"),
        ("/notifications", "csp-notifications"),
        ("/audit", "csp-audit"),
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
