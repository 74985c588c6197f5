"""Issue 24's console in real headless Chromium: a case is found, and nothing misleads.

Screenshots of each step are kept under tests/artifacts/dashboard/ (git-ignored): look at them.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import db.heartbeats
import db.tokens
from console.config import ApiConfig
from console.server import BackgroundConsole
from console.tokens import new_token, token_sha256
from db.engine import SessionFactory, create_engine_for, make_session_factory
from db.enums import ProcessKind, TokenScope
from stroke_triage.settings import Settings
from tests.api.browser import absent, click_through, screenshot
from tests.api.cases import OTHER_PATIENT, PATIENT, Cases, seed_cases, seed_month
from tests.helpers import free_port, migrated_sqlite

VIEWER = "https://pacs.example.org/ohif/viewer?StudyInstanceUIDs={study_instance_uid}"
RED = "rgba(198, 40, 40, 1)"


@dataclass
class Site:
    base: str
    factory: SessionFactory
    cases: Cases | None
    tokens: dict[str, str]


def _serve(tmp_path: Path, redis_url: str, fill: Any) -> Iterator[Site]:
    url = migrated_sqlite(tmp_path / "console.db")
    engine = create_engine_for(url)
    factory = make_session_factory(engine)
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        broker_url=redis_url,
        task_queue=f"test-cases-{uuid.uuid4().hex[:8]}",
        api=ApiConfig(port=port, refresh_s=0, viewer_url=VIEWER),
    )
    cases = fill(factory, settings)
    tokens = {}
    with factory() as session:
        for name, scope in (("ops", TokenScope.ADMIN), ("reader", TokenScope.READ)):
            tokens[name] = new_token()
            db.tokens.create_token(
                session=session, name=name, scope=scope, token_sha256=token_sha256(tokens[name])
            )
        session.commit()
    console = BackgroundConsole(settings.console_runtime())
    try:
        yield Site(f"http://127.0.0.1:{port}", factory, cases, tokens)
    finally:
        console.stop()
        engine.dispose()


@pytest.fixture
def site(tmp_path: Path, redis_url: str) -> Iterator[Site]:
    """The cases of tests/api/cases.py, an hour ago, with a listener and a worker beating."""

    def fill(factory: SessionFactory, settings: Settings) -> Cases:
        cases = seed_cases(
            factory,
            base=datetime.now(UTC) - timedelta(hours=1),
            storage_dir=settings.storage_dir,
            reports_dir=settings.reports_dir,
        )
        with factory() as session:
            db.heartbeats.beat(
                session=session,
                kind=ProcessKind.LISTENER,
                name="pacs-gw pid 10",
                details={
                    "ae_title": "STROKETRIAGE",
                    "port": 11112,
                    "processes": 1,
                    "free_disk_mb": 52000.0,
                    "min_free_disk_mb": 1024.0,
                },
            )
            db.heartbeats.beat(
                session=session,
                kind=ProcessKind.WORKER,
                name="celery@gpu1 pid 20",
                details={
                    "model_name": "vit-ich",
                    "model_version": "2.0.0",
                    "model_loaded": True,
                    "device": "cuda",
                },
            )
            session.commit()
        return cases

    yield from _serve(tmp_path, redis_url, fill)


@pytest.fixture
def month(tmp_path: Path, redis_url: str) -> Iterator[Site]:
    """Thirty days of activity, three series a day."""

    def fill(factory: SessionFactory, _: Settings) -> None:
        # Early enough in the day that each day's three series stay on that (UTC) day.
        today = datetime.now(UTC).replace(hour=3, minute=0, second=0, microsecond=0)
        if today > datetime.now(UTC):
            today -= timedelta(days=1)
        seed_month(factory, today=today)

    yield from _serve(tmp_path, redis_url, fill)


def _log_in(browser: Any, site: Site, who: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{site.base}/login")
    browser.find_element(By.ID, "token").send_keys(site.tokens[who])
    click_through(browser, browser.find_element(By.ID, "login-button"))
    assert browser.find_element(By.ID, "filters")


def _row(browser: Any, uid: str) -> Any:
    from selenium.webdriver.common.by import By

    link = browser.find_element(By.CSS_SELECTOR, f'#worklist a[href="/series/{uid}"]')
    return link.find_element(By.XPATH, "./ancestor::tr")


def test_an_admin_finds_a_case_and_is_not_misled(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    assert site.cases is not None
    cases = site.cases
    _log_in(browser, site, "ops")
    screenshot(browser, "cases-1-worklist")
    dead = _row(browser, cases.not_delivered)
    flag = dead.find_element(By.CSS_SELECTOR, "td.report .undelivered")
    assert flag.text == "report NOT delivered"
    assert flag.value_of_css_property("color") == RED
    assert "processing" not in dead.text and "not delivered" in dead.text
    resent = _row(browser, cases.resent)
    assert resent.find_element(By.CSS_SELECTOR, "td.latency").text == "7.0 s"
    page = browser.page_source
    assert cases.echo_sr not in page and cases.echo_sc not in page
    assert "Series 1\u20134 of 4" in browser.find_element(By.ID, "count").text

    # Search by the patient's family name: one row, with the patient, the station, the viewer.
    box = browser.find_element(By.ID, "q")
    box.send_keys("quolmbyx")
    click_through(browser, browser.find_element(By.ID, "search-button"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#worklist tbody tr")
    assert len(rows) == 1
    found = rows[0].text
    assert "Quolmbyx, Zerwintha" in found and PATIENT[1] in found and PATIENT[2] in found
    assert "AI ICH TRIAGE: SUSPECTED" in found and "CT_NORTH" in found
    assert "ORTHANC" not in rows[0].find_element(By.CSS_SELECTOR, "td.sender").text
    viewer = rows[0].find_element(By.CSS_SELECTOR, "a.viewer").get_attribute("href")
    assert viewer == VIEWER.format(study_instance_uid=cases.named_study)
    screenshot(browser, "cases-2-search-patient")

    # Filters: not suspected, from the station without a Station Name (its AE title).
    browser.find_element(By.ID, "q").clear()
    Select(browser.find_element(By.ID, "verdict")).select_by_value("not_suspected")
    Select(browser.find_element(By.ID, "station")).select_by_visible_text("CT_SOUTH_AE")
    click_through(browser, browser.find_element(By.ID, "search-button"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#worklist tbody tr")
    assert len(rows) == 1 and OTHER_PATIENT[1] in rows[0].text
    assert "AI ICH TRIAGE: NOT SUSPECTED" in rows[0].text
    screenshot(browser, "cases-3-filters")
    Select(browser.find_element(By.ID, "status")).select_by_value("not_delivered")
    Select(browser.find_element(By.ID, "verdict")).select_by_value("")
    Select(browser.find_element(By.ID, "station")).select_by_value("")
    click_through(browser, browser.find_element(By.ID, "search-button"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#worklist tbody tr")
    assert len(rows) == 1 and "report NOT delivered" in rows[0].text

    # The series page says it too, in red, and offers Re-send but no Re-queue.
    click_through(browser, rows[0].find_element(By.CSS_SELECTOR, "a.uid"))
    alarm = browser.find_element(By.ID, "not-delivered")
    assert alarm.value_of_css_property("background-color") == RED
    assert browser.find_element(By.ID, f"retry-{cases.not_delivered_dead_sr}")
    assert absent(browser, By.CSS_SELECTOR, "button[id^=requeue-]")
    assert "not delivered" in browser.find_element(By.ID, "series-status").text
    screenshot(browser, "cases-4-series-not-delivered")

    # The heat map links its full size.
    browser.get(f"{site.base}/series/{cases.named}")
    assert "Intracranial hemorrhage (ICH)" in browser.find_element(By.ID, "finding").text
    screenshot(browser, "cases-5-series-named")
    thumbnail = browser.find_element(By.CSS_SELECTOR, "a.heatmap img")
    assert thumbnail.size["width"] == 256
    click_through(browser, browser.find_element(By.CSS_SELECTOR, "a.heatmap"))
    assert browser.current_url.endswith(f"/exports/{cases.named_sc_export}/frames/0.png")
    assert browser.execute_script("return document.images[0].naturalWidth") == 512
    screenshot(browser, "cases-6-heatmap-full-size")


def test_status_notifications_and_audit_pages(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    assert site.cases is not None
    _log_in(browser, site, "ops")
    browser.get(f"{site.base}/status")
    assert "up" in browser.find_element(By.ID, "listener-state").text
    assert browser.find_element(By.ID, "workers-up").text == "1 (1 with the model loaded)"
    assert "52000 MB" in browser.find_element(By.ID, "disk").text
    problems = browser.find_element(By.ID, "problems")
    assert "3 dead letters wait" in problems.text
    assert browser.find_element(By.CSS_SELECTOR, ".process-worker .model").text == "vit-ich 2.0.0"
    screenshot(browser, "cases-7-status")

    browser.get(f"{site.base}/notifications")
    dead = site.cases.dead_notification
    row = browser.find_element(By.ID, f"notification-{dead}")
    assert "dead" in row.text and "http: 503 from the receiver" in row.text
    screenshot(browser, "cases-8-notifications")
    click_through(browser, browser.find_element(By.ID, f"retry-notification-{dead}"))
    assert "Back in the outbox" in browser.find_element(By.ID, "message").text
    assert "pending" in browser.find_element(By.ID, f"notification-{dead}").text

    browser.get(f"{site.base}/audit")
    table = browser.find_element(By.ID, "audit").text
    assert "notification.retry" in table and "console.login" in table
    screenshot(browser, "cases-9-audit")


def test_a_reader_sees_no_patient(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    _log_in(browser, site, "reader")
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#worklist th")]
    assert "Patient" not in headers and "Accession" in headers
    assert absent(browser, By.ID, "nav-audit")
    box = browser.find_element(By.ID, "q")
    box.send_keys(PATIENT[1])
    click_through(browser, browser.find_element(By.ID, "search-button"))
    assert "Nothing matches this search." in browser.find_element(By.ID, "empty").text
    screenshot(browser, "cases-10-reader-search")
    for path in ("/", "/?q=" + PATIENT[2]):
        browser.get(f"{site.base}{path}")
        for phi in (PATIENT[0].split("^")[0], PATIENT[1], OTHER_PATIENT[1]):
            assert phi not in browser.page_source


def test_thirty_days_of_stats_and_pages_of_a_month(browser: Any, month: Site) -> None:
    from selenium.webdriver.common.by import By

    _log_in(browser, month, "ops")
    assert "Series 1\u201350 of 90" in browser.find_element(By.ID, "count").text
    click_through(browser, browser.find_element(By.ID, "next-page"))
    assert "Series 51\u201390 of 90" in browser.find_element(By.ID, "count").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#worklist tbody tr")) == 40
    screenshot(browser, "month-1-worklist-page-2")

    browser.get(f"{month.base}/stats?days=30")
    labels = browser.find_elements(By.CSS_SELECTOR, "svg.chart text.day")
    boxes = sorted(
        (label.rect["x"], label.rect["x"] + label.rect["width"], label.text) for label in labels
    )
    assert len(boxes) >= 10
    for (_, right, left_text), (left, _, right_text) in itertools.pairwise(boxes):
        assert right <= left, f"{left_text} overlaps {right_text}"
    today = datetime.now(UTC).strftime("%m-%d")
    assert boxes[-1][2] == today  # today is always labelled
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    assert len(bars) == 30
    screenshot(browser, "month-2-stats-30-days")
