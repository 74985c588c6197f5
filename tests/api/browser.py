"""Driving the real headless Chromium (Debian's chromium and chromium-driver) in console tests."""

from __future__ import annotations

from typing import Any

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


def screenshot(browser: Any, name: str) -> None:
    """Keep a screenshot of the current page as a test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))
