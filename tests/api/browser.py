"""Driving the real headless Chromium (Debian's chromium and chromium-driver) in console tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from db.engine import SessionFactory
from tests.api.seed import Seeded
from tests.helpers import REPO_ROOT

ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "dashboard"
"""Screenshots of each page the browser tests visit (git-ignored), to look at."""

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

PAGE_LOAD_TIMEOUT_S = 15.0


def click_through(browser: Any, element: Any) -> None:
    """Click a link or a form's button and wait until the browser has left the page.

    A click returns before the next page loads; without this wait the next lookup may still
    see the old page (or none).
    """
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = browser.find_element(By.TAG_NAME, "html")
    element.click()

    def left(_: Any) -> bool:
        try:
            page.is_enabled()
        except WebDriverException:
            # Stale; or, caught mid-navigation, "node does not belong to the document".
            return True
        return False

    WebDriverWait(browser, PAGE_LOAD_TIMEOUT_S).until(left)


def absent(browser: Any, by: str, value: str) -> bool:
    """Whether the page, once loaded, has no element ``value`` (located ``by``).

    The console renders its pages on the server, so what a loaded page lacks it lacks for
    good; the lookup is made without the browser's implicit wait, which would otherwise
    wait PAGE_LOAD_TIMEOUT_S for an element that never comes.
    """
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, PAGE_LOAD_TIMEOUT_S).until(
        lambda b: b.execute_script("return document.readyState") == "complete"
    )
    browser.implicitly_wait(0)
    try:
        return not browser.find_elements(by, value)
    finally:
        browser.implicitly_wait(PAGE_LOAD_TIMEOUT_S)


def screenshot(browser: Any, name: str) -> None:
    """Keep a screenshot of the current page as a test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


@dataclass
class RunningConsole:
    """A console serving a seeded SQLite database (recent series) to an admin token."""

    base: str
    factory: SessionFactory
    seeded: Seeded
    token: str


def log_in(browser: Any, running: RunningConsole) -> None:
    """Log in to the dashboard with the admin token; the worklist is shown."""
    from selenium.webdriver.common.by import By

    browser.get(f"{running.base}/login")
    browser.find_element(By.ID, "token").send_keys(running.token)
    click_through(browser, browser.find_element(By.ID, "login-button"))
    assert browser.find_element(By.ID, "worklist")
