"""The dashboard in real headless Chromium (Debian chromium + chromium-driver, via Selenium).

Screenshots of every page are kept under tests/artifacts/dashboard/ (git-ignored).
"""

from __future__ import annotations

from typing import Any

from tests.api.browser import RunningConsole, click_through, screenshot


def test_login_worklist_series_and_requeue(browser: Any, running: RunningConsole) -> None:
    from selenium.webdriver.common.by import By

    base, seeded = running.base, running.seeded
    browser.get(f"{base}/")
    assert "/login" in browser.current_url
    screenshot(browser, "1-login")
    browser.find_element(By.ID, "token").send_keys(running.token)
    click_through(browser, browser.find_element(By.ID, "login-button"))
    # Suspected series of the last hours on top, then every series, newest first.
    urgent = browser.find_element(By.ID, "urgent").find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(urgent) == 1 and "SUSPECTED" in urgent[0].text and "0.91" in urgent[0].text
    table = browser.find_element(By.ID, "worklist")
    assert len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) == 3
    screenshot(browser, "2-worklist")

    cookie = browser.get_cookie("stroke_triage_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"

    browser.get(f"{base}/series/{seeded.done_series}")
    assert browser.find_element(By.CSS_SELECTOR, "svg.chart")
    screenshot(browser, "3-series")

    browser.get(f"{base}/failures")
    dead = browser.find_element(By.ID, "dead-jobs")
    click_through(browser, dead.find_element(By.CSS_SELECTOR, "a"))
    screenshot(browser, "4-failed-series")
    requeue = browser.find_element(By.ID, f"requeue-{seeded.failed_job}")
    click_through(browser, requeue)
    message = browser.find_element(By.ID, "message").text
    assert f"Job {seeded.failed_job} queued again as task" in message
    statuses = browser.find_elements(By.CSS_SELECTOR, "#jobs .job-status")
    assert statuses[0].text == "queued"
    screenshot(browser, "5-requeued")

    browser.get(f"{base}/stats")
    screenshot(browser, "6-stats")

    # Logging out ends the session on the server: the old cookie, put back, is refused.
    click_through(browser, browser.find_element(By.ID, "logout-button"))
    assert "/login" in browser.current_url
    browser.add_cookie({"name": cookie["name"], "value": cookie["value"], "path": "/"})
    browser.get(f"{base}/")
    assert "/login" in browser.current_url
    assert browser.find_element(By.ID, "login-button")
    screenshot(browser, "7-logged-out")
