"""Studies in the console (SQLite and PostgreSQL, and Chromium): the series read and why not the
others, the study's reports, and the preview behind a login or a bearer token."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

import db.audit
import db.exports
import db.studies
from db.engine import SessionFactory
from tests.api.browser import RunningConsole, click_through, screenshot
from tests.api.web import bearer, login
from tests.helpers import (
    record_head_ct_series,
    seed_export,
    seed_job,
    seed_verdict,
)

STUDY = "1.2.826.0.1.3680043.10.26.9"
BONE_REASON = (
    "another series of this study was chosen: bone kernel BONEPLUS; chosen: series 2 HEAD 5mm STD"
)


@dataclass(frozen=True)
class SeededStudy:
    brain: str
    thin: str
    bone: str
    scout: str
    first_result: int
    current_result: int
    preview_size: tuple[int, int]


def seed_study(factory: SessionFactory, folder: Path) -> SeededStudy:
    """A study whose thin series was reported first, then revised by its 5 mm brain series."""
    scout, brain, bone, thin = (f"{STUDY}.{n}" for n in (1, 2, 3, 4))
    folder.mkdir(parents=True, exist_ok=True)
    size = (1036, 322)
    with factory() as session:
        for uid, number, description, kernel, thickness in (
            (thin, 4, "HEAD 1.25mm", "STANDARD", 1.25),
            (bone, 3, "HEAD 5mm BONE", "BONEPLUS", 5.0),
            (brain, 2, "HEAD 5mm STD", "STANDARD", 5.0),
        ):
            record_head_ct_series(
                session, series=uid, study=STUDY, count=3, description=description
            )
            db.studies.record_series_facts(
                session=session,
                series_instance_uid=uid,
                series_number=number,
                convolution_kernel=kernel,
                slice_thickness_mm=thickness,
                axial_slices=3,
                coverage_mm=150.0,
                derived=False,
            )
        record_head_ct_series(session, series=scout, study=STUDY, count=1, description="SCOUT")
        db.studies.mark_not_eligible(
            session=session, series_instance_uid=scout, reason="localizer (scout) image"
        )
        # The thin series alone first (the brain series had not arrived)...
        db.studies.apply_choice(
            session=session,
            chosen=thin,
            reasons={thin: "chosen: soft-tissue kernel STANDARD", bone: "bone kernel BONEPLUS"},
            new_job=False,
        )
        _, first = seed_job(session, series=thin, stage="done", verdict=seed_verdict(0.8))
        # ... then the 5 mm brain series, which revised the study's report.
        db.studies.apply_choice(
            session=session,
            chosen=brain,
            reasons={
                brain: "chosen: soft-tissue kernel STANDARD, slice thickness 5 mm",
                thin: "another series of this study was chosen: thinner slices",
                bone: BONE_REASON,
            },
            new_job=False,
        )
        _, current = seed_job(
            session, series=brain, stage="done", verdict=seed_verdict(0.2, fingerprint="e" * 64)
        )
        assert first is not None and current is not None
        for result_id in (first, current):
            path = folder / f"preview-{result_id}.jpg"
            Image.new("RGB", size, (40, 40, 40)).save(path, format="JPEG")
            db.studies.set_preview_path(session=session, result_id=result_id, path=str(path))
        export = seed_export(session, result_id=current, sop_instance_uid="2.25.26")
        db.exports.mark_export_sent(session=session, export_id=export.id)
        session.commit()
    return SeededStudy(brain, thin, bone, scout, first, current, size)


def test_the_study_api_names_the_series_read_and_why_not_the_others(
    client: TestClient, factory: SessionFactory, tokens: dict[str, str], tmp_path: Path
) -> None:
    seeded = seed_study(factory, tmp_path / "previews")
    assert client.get(f"/api/studies/{STUDY}").status_code == 401
    answer = client.get(f"/api/studies/{STUDY}", headers=bearer(tokens["reader"]))
    assert answer.status_code == 200, answer.text
    study = answer.json()
    assert study["chosen"]["series_instance_uid"] == seeded.brain
    assert study["chosen"]["choice_reason"].startswith("chosen: soft-tissue kernel STANDARD")
    assert study["current_result_id"] == seeded.current_result
    by_uid = {s["series_instance_uid"]: s for s in study["series"]}
    assert by_uid[seeded.bone]["choice"] == "passed_over"
    assert by_uid[seeded.bone]["choice_reason"] == BONE_REASON
    assert by_uid[seeded.bone]["status"] == "skipped"
    assert by_uid[seeded.thin]["choice"] == "passed_over"
    assert by_uid[seeded.thin]["status"] == "done"  # it was reported; its report is revised
    assert by_uid[seeded.scout]["choice"] == "not_eligible"
    assert by_uid[seeded.scout]["choice_reason"] == "localizer (scout) image"
    current, first = study["reports"]
    assert (current["result_id"], first["result_id"]) == (
        seeded.current_result,
        seeded.first_result,
    )
    assert current["replaces_result_id"] == seeded.first_result and not current["superseded"]
    assert first["superseded"] and current["report_status"] == "sent"
    assert current["preview_url"] == f"/previews/{seeded.current_result}.jpg"
    assert current["series_number"] == 2 and current["series_description"] == "HEAD 5mm STD"

    listed = client.get("/api/studies", headers=bearer(tokens["reader"])).json()
    (row,) = [row for row in listed if row["study_instance_uid"] == STUDY]
    assert row["series_count"] == 4 and row["chosen_series_instance_uid"] == seeded.brain
    assert row["result_id"] == seeded.current_result and row["suspected"] is False
    missing = client.get("/api/studies/1.2.3.404", headers=bearer(tokens["reader"]))
    assert missing.status_code == 404
    assert (
        "/api/studies/{study_instance_uid}"
        in client.get("/openapi.json", headers=bearer(tokens["reader"])).json()["paths"]
    )


def test_the_preview_needs_a_bearer_token_or_a_login_and_is_audited(
    client: TestClient, factory: SessionFactory, tokens: dict[str, str], tmp_path: Path
) -> None:
    seeded = seed_study(factory, tmp_path / "previews")
    url = f"/previews/{seeded.current_result}.jpg"
    assert client.get(url).status_code == 401  # a program without a token
    browser = client.get(url, headers={"Accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 303  # the login page, then the preview again
    assert browser.headers["location"] == f"/login?next=%2Fpreviews%2F{seeded.current_result}.jpg"
    assert client.get(url, headers=bearer("st_wrong")).status_code == 401
    shown = client.get(url, headers=bearer(tokens["reader"]))
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
    assert "no-store" in shown.headers["cache-control"]
    assert Image.open(io.BytesIO(shown.content)).size == seeded.preview_size
    assert client.get("/previews/999999.jpg", headers=bearer(tokens["ops"])).status_code == 404
    form = client.get(browser.headers["location"]).text
    assert f'name="next" value="{url}"' in form
    done = client.post("/login", data={"token": tokens["ops"], "next": url}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == url
    assert client.get(url).status_code == 200  # the dashboard's login does too
    with factory() as session:
        views = [e for e in db.audit.list_actions(session=session) if e.action == "preview.view"]
    assert [(e.actor, e.result) for e in views] == [
        ("ops", "ok"),
        ("ops", "not_found"),
        ("reader", "ok"),
    ]
    assert views[0].target == f"result {seeded.current_result}"


def test_the_study_page_shows_the_choice_the_reports_and_the_preview_full_size(
    browser: Any, running: RunningConsole, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    seeded = seed_study(running.factory, tmp_path / "previews")
    # The alert's preview link, opened by a browser with no session: the login, then the preview.
    preview_link = f"{running.base}/previews/{seeded.current_result}.jpg"
    browser.get(preview_link)
    assert "/login?next=" in browser.current_url
    browser.find_element(By.ID, "token").send_keys(running.token)
    click_through(browser, browser.find_element(By.ID, "login-button"))
    assert browser.current_url == preview_link
    width = browser.execute_script("return document.images[0].naturalWidth;")
    assert width == seeded.preview_size[0]
    browser.get(f"{running.base}/series/{seeded.thin}")
    click_through(browser, browser.find_element(By.ID, "study-link"))
    assert f"/studies/{STUDY}" in browser.current_url
    assert "HEAD 5mm STD" in browser.find_element(By.ID, "chosen").text
    assert browser.find_element(By.ID, "chosen-reason").text.startswith("chosen: soft-tissue")
    assert (
        f"revises report {seeded.first_result}"
        in browser.find_element(By.ID, "current-report").text
    )
    rows = {
        row.get_attribute("data-uid"): row
        for row in browser.find_elements(By.CSS_SELECTOR, "#study-series tbody tr")
    }
    assert rows[seeded.bone].find_element(By.CSS_SELECTOR, ".reason").text == BONE_REASON
    assert rows[seeded.bone].find_element(By.CSS_SELECTOR, ".choice").text == "not chosen"
    assert rows[seeded.scout].find_element(By.CSS_SELECTOR, ".choice").text == "not classifiable"
    assert rows[seeded.brain].find_element(By.CSS_SELECTOR, ".choice").text == "read by the model"
    reports = browser.find_elements(By.CSS_SELECTOR, "#study-reports tbody tr")
    assert "current, revises" in reports[0].text and "revised by a later report" in reports[1].text
    preview = browser.find_element(By.ID, "preview")
    width, natural = browser.execute_script(
        "const i = arguments[0]; return [i.width, i.naturalWidth];", preview
    )
    assert natural == seeded.preview_size[0] and width == natural  # loaded, and full size
    screenshot(browser, "study")


def test_the_worklist_and_the_results_say_how_many_of_the_instances_were_read(
    client: TestClient, factory: SessionFactory, tokens: dict[str, str]
) -> None:
    """A series of 18 instances whose stack read by the model has 8 (another stack left out)."""
    series = f"{STUDY}.7"
    with factory() as session:
        record_head_ct_series(session, series=series, study=STUDY, count=18)
        db.studies.record_series_facts(
            session=session,
            series_instance_uid=series,
            series_number=7,
            convolution_kernel="H31s",
            slice_thickness_mm=5.0,
            axial_slices=8,
            coverage_mm=40.0,
            derived=False,
        )
        seed_job(session, series=series, stage="done", verdict=seed_verdict(0.3))
        session.commit()
    reader = bearer(tokens["reader"])
    (row,) = [
        r
        for r in client.get("/api/series", headers=reader).json()
        if r["series_instance_uid"] == series
    ]
    assert (row["instance_count"], row["axial_slices"]) == (18, 8)
    csv_text = client.get("/api/results", headers={**reader, "Accept": "text/csv"}).text
    header, line = csv_text.splitlines()[:2]
    fields = dict(zip(header.split(","), line.split(","), strict=True))
    assert (fields["instances"], fields["axial_slices"]) == ("18", "8")

    login(client, tokens["reader"])
    assert ">8 of 18</td>" in client.get("/").text
    assert '<dd id="axial-slices">8</dd>' in client.get(f"/series/{series}").text
