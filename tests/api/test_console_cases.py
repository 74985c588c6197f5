"""Issue 24's console on SQLite and PostgreSQL: state that never misleads, and finding a case.

- a report that never reached the PACS reads "report NOT delivered", never "processing";
- a series sent again after its report keeps its latency (complete to report, never negative);
- our own SR and SC sent back by a PACS are neither series nor skipped series;
- search by UID and accession (any token) and by patient name or ID (admin only), filters,
  paging with a count; read tokens never see a patient's name or ID; the database holds none;
- the verdict names the model's finding; the viewer link.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import MetaData, select

from console.app import create_app
from console.config import ApiConfig
from db.engine import SessionFactory
from stroke_triage.settings import Settings
from tests.api.cases import OTHER_PATIENT, PATIENT, Cases, seed_cases
from tests.api.web import bearer, login

PHI = [PATIENT[0].split("^")[0], PATIENT[0].split("^")[1], PATIENT[1], OTHER_PATIENT[1]]
VIEWER = "https://pacs.example.org/ohif/viewer?StudyInstanceUIDs={study_instance_uid}"


@dataclass
class Site:
    client: TestClient
    cases: Cases
    tokens: dict[str, str]


@pytest.fixture
def site(
    database_url: str,
    tmp_path: Path,
    redis_url: str,
    factory: SessionFactory,
    tokens: dict[str, str],
) -> Iterator[Site]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url=redis_url,
        task_queue=f"test-cases-{uuid.uuid4().hex[:8]}",
        api=ApiConfig(viewer_url=VIEWER, refresh_s=0),
    )
    cases = seed_cases(
        factory,
        base=datetime.now(UTC) - timedelta(hours=1),
        storage_dir=settings.storage_dir,
        reports_dir=settings.reports_dir,
    )
    with TestClient(create_app(settings.console_runtime())) as client:
        yield Site(client, cases, tokens)


def _uids(site: Site, query: str, token: str = "ops") -> list[str]:
    answer = site.client.get(f"/api/series?{query}", headers=bearer(site.tokens[token]))
    assert answer.status_code == 200, answer.text
    return [row["series_instance_uid"] for row in answer.json()]


def test_a_dead_report_reads_not_delivered_never_processing(site: Site) -> None:
    cases, admin = site.cases, bearer(site.tokens["ops"])
    row = site.client.get(f"/api/series/{cases.not_delivered}", headers=admin).json()
    assert row["status"] == "not_delivered"
    assert (row["job_status"], row["export_status"]) == ("export_failed", "dead")
    assert _uids(site, "series_status=not_delivered") == [cases.not_delivered]
    assert cases.not_delivered not in _uids(site, "series_status=processing")
    (record,) = [
        r
        for r in site.client.get("/api/results", headers=admin).json()
        if r["series_instance_uid"] == cases.not_delivered
    ]
    assert record["series_status"] == "not_delivered"

    login(site.client, site.tokens["ops"])
    worklist = site.client.get("/").text
    line = _row_of(worklist, cases.not_delivered)
    assert '<span class="undelivered">report NOT delivered</span>' in line
    assert "status-not_delivered" in line and ">processing<" not in line
    page = site.client.get(f"/series/{cases.not_delivered}").text
    assert 'id="not-delivered"' in page and "Report NOT delivered" in page
    assert "report NOT delivered" in page.split('id="report-state"')[1].split("</dd>")[0]
    # The whole error, not its first 80 characters.
    assert "will not be tried again until an admin re-sends it" in page


def _row_of(html: str, uid: str) -> str:
    """The worklist's table row that links this series."""
    table = html.split('id="worklist"', 1)[1]
    return next(row for row in table.split("<tr") if f"/series/{uid}" in row)


def test_a_series_sent_again_keeps_its_latency(site: Site, factory: SessionFactory) -> None:
    cases, reader = site.cases, bearer(site.tokens["reader"])
    row = site.client.get(f"/api/series/{cases.resent}", headers=reader).json()
    # Sent again 438 s after its report: its last instance is later than its report ...
    assert row["last_received_at"] > row["reported_at"]
    # ... and its latency is still from complete (+5 s) to reported (+12 s).
    assert row["latency_s"] == pytest.approx(7.0)
    text = site.client.get("/api/results?format=csv", headers=reader).text
    records = {r["series_instance_uid"]: r for r in csv.DictReader(io.StringIO(text))}
    assert float(records[cases.resent]["latency_s"]) == pytest.approx(7.0)
    assert all(float(r["latency_s"]) >= 0 for r in records.values() if r["latency_s"])
    stats = site.client.get("/api/stats?days=2", headers=reader).json()
    assert stats["latency_p50_s"] == pytest.approx(6.0)  # the named series: +5 s to +11 s
    assert stats["latency_p95_s"] == pytest.approx(7.0)
    login(site.client, site.tokens["reader"])
    assert '<td class="latency">7.0 s</td>' in _row_of(site.client.get("/").text, cases.resent)


def test_our_own_reports_sent_back_are_not_series(site: Site) -> None:
    cases, reader = site.cases, bearer(site.tokens["reader"])
    listed = _uids(site, "limit=100", "reader")
    assert cases.echo_sr not in listed and cases.echo_sc not in listed
    assert len(listed) == 4
    assert _uids(site, "series_status=skipped") == []
    stats = site.client.get("/api/stats?days=2", headers=reader).json()
    assert stats["skipped_series"] == 0 and stats["skipped_by_reason"] == {}
    assert sum(n for _, n in stats["series_per_day"]) == 4
    echo = site.client.get(f"/api/series/{cases.echo_sr}", headers=reader).json()
    assert echo["own_report_of"] == cases.resent
    login(site.client, site.tokens["reader"])
    assert cases.echo_sc not in site.client.get("/").text
    page = site.client.get(f"/series/{cases.echo_sc}").text
    assert 'id="own-report"' in page and cases.resent in page


def test_search_by_uid_accession_and_for_admins_the_patient(site: Site) -> None:
    cases = site.cases
    for query in (cases.named, cases.named_study, PATIENT[2], PATIENT[2].lower()):
        assert _uids(site, f"q={query}", "reader") == [cases.named], query
    for query in ("Quolmbyx", "zerwintha QUOLMBYX", "Quolmbyx^Zerwintha", PATIENT[1]):
        assert _uids(site, f"q={query}") == [cases.named], query
        assert _uids(site, f"q={query}", "reader") == [], query  # read tokens: no patient search
    assert _uids(site, "q=Quolm") == []  # whole name parts only
    assert _uids(site, "q=Quolmbyx Oswald") == []  # every part must match
    assert _uids(site, f"q={OTHER_PATIENT[1]}") == [cases.other]
    answer = site.client.get("/api/series?q=Brennick", headers=bearer(site.tokens["ops"]))
    assert answer.headers["x-total-count"] == "1"
    # Every search is audited: who, how many found, whether the patient was searched; not what.
    audit = site.client.get(
        "/api/audit?action=series.search&limit=1000", headers=bearer(site.tokens["ops"])
    ).json()
    assert len(audit) == 16  # 4 + 2 x 4 + 4 searches above
    assert {(e["actor"], e["detail"]) for e in audit if e["actor"] == "reader"} == {
        ("reader", "1 series found; no patient data searched."),
        ("reader", "0 series found; no patient data searched."),
    }
    assert all("Quolmbyx" not in str(e) and PATIENT[1] not in str(e) for e in audit)


def test_read_tokens_never_see_a_patient_and_the_database_holds_none(
    site: Site, factory: SessionFactory
) -> None:
    cases = site.cases
    reader = bearer(site.tokens["reader"])
    responses = [
        site.client.get(url, headers=reader)
        for url in (
            "/api/series?limit=100",
            f"/api/series/{cases.named}",
            "/api/results?format=csv",
            "/api/notifications",
            "/api/status",
        )
    ]
    login(site.client, site.tokens["reader"])
    responses += [site.client.get(url) for url in ("/", f"/series/{cases.named}", "/status")]
    assert site.client.get("/?q=Quolmbyx").text.count("/series/") == 0
    # An error page or an empty answer holds no patient either: each must be the real page.
    for response in responses:
        assert response.status_code == 200, (response.url, response.status_code)
    listing, series, _, _, _, worklist, page, _ = (response.text for response in responses)
    assert cases.named in listing and cases.named in series
    assert cases.named in worklist and cases.named in page
    for response in responses:
        for phi in PHI:
            assert phi not in response.text, response.url
    assert PATIENT[2] in site.client.get(f"/series/{cases.named}").text  # accession: read sees it

    admin = TestClient(site.client.app)
    login(admin, site.tokens["ops"])
    worklist = admin.get("/?q=Quolmbyx").text
    line = _row_of(worklist, cases.named)
    assert "Quolmbyx, Zerwintha" in line and PATIENT[1] in line and PATIENT[2] in line
    # The database: every column of every table, the search index included, holds no patient.
    with factory() as session:
        tables = MetaData()
        tables.reflect(bind=session.get_bind())
        dump = " ".join(
            str(value)
            for table in tables.sorted_tables
            for row in session.execute(select(table))
            for value in row
        )
    assert cases.named in dump and "CT_NORTH" in dump
    for phi in [*PHI, PATIENT[2], "QUOLMBYX"]:
        assert phi not in dump


def test_filters_paging_and_the_sender(site: Site) -> None:
    cases = site.cases
    assert _uids(site, "station=CT_NORTH") == [cases.named]
    assert _uids(site, "station=CT_SOUTH_AE") == [cases.other]  # no Station Name: the AE
    assert _uids(site, "verdict=not_suspected") == [cases.other]
    answer = site.client.get("/api/series?limit=2&offset=2", headers=bearer(site.tokens["ops"]))
    assert answer.headers["x-total-count"] == "4" and len(answer.json()) == 2

    login(site.client, site.tokens["ops"])
    page = site.client.get("/?size=25&verdict=suspected&station=CT_NORTH").text
    assert "Series 1\u20131 of 1" in page and _row_of(page, cases.named)
    assert '<td class="sender" title="calling AE title ORTHANC">CT_NORTH</td>' in page
    today = datetime.now(UTC).date()
    assert "of 4" in site.client.get(f"/?since={today - timedelta(days=1)}").text
    assert "No series match" in site.client.get(f"/?until={today - timedelta(days=2)}").text
    assert "must be a date" in site.client.get("/?since=yesterday").text
    # 25 rows a page, and the plain worklist's count covers every page.
    first = site.client.get("/?size=25").text
    assert "Series 1\u20134 of 4" in first and 'id="next-page"' not in first
    assert "No series on page 9: there are 4" in site.client.get("/?page=9").text


def test_the_verdict_names_the_models_finding_and_links_the_viewer(site: Site) -> None:
    cases = site.cases
    login(site.client, site.tokens["reader"])
    worklist = site.client.get("/").text
    named = _row_of(worklist, cases.named)
    assert 'title="Intracranial hemorrhage">AI ICH TRIAGE: SUSPECTED</span>' in named
    assert "AI ICH TRIAGE: NOT SUSPECTED" in _row_of(worklist, cases.other)
    assert "stroke" not in named.lower()
    link = VIEWER.format(study_instance_uid=cases.named_study)
    assert f'<a href="{link}" class="viewer"' in named
    page = site.client.get(f"/series/{cases.named}").text
    assert 'id="viewer-link"' in page and link in page
    assert "Intracranial hemorrhage (ICH)" in page
    # A multi-output model's further finding: its probability, no verdict of its own.
    assert '<ul id="further-findings">\n<li>Subdural hemorrhage (SDH): 0.40</li>' in page
    assert 'id="further-findings"' not in site.client.get(f"/series/{cases.other}").text
    record = site.client.get("/api/results").json()[0]
    assert (record["finding"], record["finding_meaning"]) == ("ICH", "Intracranial hemorrhage")
    api = site.client.get(f"/api/series/{cases.named}", headers=bearer(site.tokens["reader"]))
    assert api.json()["further_findings"] == [
        {
            "finding_scheme": "SCT",
            "finding_value": "35486000",
            "finding_meaning": "Subdural hemorrhage",
            "finding_name": "SDH",
            "probability": 0.4,
        }
    ]


def test_viewer_templates_are_checked() -> None:
    with pytest.raises(ValidationError, match=r"api.viewer_url names \{study_uid\}"):
        ApiConfig(viewer_url="https://pacs/ohif/viewer?StudyInstanceUIDs={study_uid}")
    with pytest.raises(ValidationError, match="must start with http://, https://, weasis://"):
        ApiConfig(viewer_url="javascript:alert({study_instance_uid})")
    weasis = (
        "weasis://%24dicom%3Ars%20--url%20%22https%3A%2F%2Fpacs.example.org%2Fdicom-web%22"
        "%20-r%20%22studyUID%3D{study_instance_uid}%22"
    )
    assert ApiConfig(viewer_url=weasis).viewer_url == weasis


def test_heat_map_full_size_and_notifications(site: Site) -> None:
    cases = site.cases
    login(site.client, site.tokens["ops"])
    page = site.client.get(f"/series/{cases.named}").text
    href = f"/exports/{cases.named_sc_export}/frames/0.png"
    assert f'<a href="{href}" class="heatmap"' in page
    image = site.client.get(href)
    assert image.headers["content-type"] == "image/png" and image.content[16:24] == (
        (512).to_bytes(4, "big") * 2
    )
    notes = site.client.get("/notifications").text
    assert f'id="retry-notification-{cases.dead_notification}"' in notes
    assert f'id="retry-notification-{cases.sent_notification}"' not in notes
    assert "http: 503 from the receiver" in notes
    assert "Notifications 1\u20131 of 1" in site.client.get("/notifications?status=dead").text
    assert "of 2" in site.client.get("/notifications?status=&event=").text
