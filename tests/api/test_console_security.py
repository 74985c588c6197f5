"""The console's side doors (issue 23): actions by cookie, re-queue of running jobs, sessions that
outlive logout, missing security headers; and the audit of logins and patient pages (issue 24).

Each test failed before its fix.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import db.audit
import db.jobs
from console import admin
from console.auth import COOKIE_NAME
from db.engine import SessionFactory
from db.enums import JobStatus
from stroke_triage.settings import Settings
from tests.api.seed import T0, Seeded, _series
from tests.api.web import bearer, csrf_of, login

#: How a job is brought to each state that must not be re-queued.
STEPS: dict[JobStatus, list[Callable[..., object]]] = {
    JobStatus.PENDING: [],
    JobStatus.QUEUED: [db.jobs.mark_job_queued],
    JobStatus.STARTED: [db.jobs.mark_job_queued, db.jobs.start_job],
    JobStatus.INFERRED: [db.jobs.mark_job_queued, db.jobs.start_job, db.jobs.mark_inferred],
    JobStatus.EXPORT_FAILED: [
        db.jobs.mark_job_queued,
        db.jobs.start_job,
        db.jobs.mark_inferred,
        functools.partial(db.jobs.set_export_failed, failed=True),
    ],
}


def _job_in(factory: SessionFactory, state: JobStatus) -> int:
    uid = f"1.2.826.0.1.3680043.10.9.{70 + list(STEPS).index(state)}.1"
    with factory() as session:
        _series(session, uid, at=T0, ae="SCANNER3")
        job = db.jobs.create_job(session=session, series_instance_uid=uid)
        for step in STEPS[state]:
            step(session=session, job_id=job.id)
        assert job.status is state
        session.commit()
        return job.id


def _status(factory: SessionFactory, job_id: int) -> tuple[JobStatus, int]:
    with factory() as session:
        job = db.jobs.get_job(session=session, job_id=job_id)
        return job.status, job.attempts


def _actions(factory: SessionFactory) -> list[tuple[str, str, str, str]]:
    with factory() as session:
        entries = db.audit.list_actions(session=session, limit=1000)
        return [(e.actor, e.action, e.target, e.result) for e in reversed(entries)]


def test_api_actions_refuse_the_dashboard_cookie(
    client: TestClient, tokens: dict[str, str], seeded: Seeded, factory: SessionFactory
) -> None:
    login(client, tokens["ops"])
    assert client.get("/api/series").status_code == 200  # reading with the session is fine
    for url in (
        f"/api/jobs/{seeded.failed_job}/requeue",
        f"/api/exports/{seeded.dead_export}/retry",
    ):
        refused = client.post(url)
        assert refused.status_code == 401, refused.text
        assert "bearer token" in refused.json()["detail"]
    assert _status(factory, seeded.failed_job)[0] is JobStatus.FAILED


def test_requeue_refuses_a_job_that_is_not_over(
    client: TestClient, tokens: dict[str, str], seeded: Seeded, factory: SessionFactory
) -> None:
    admin_token = bearer(tokens["ops"])
    for state in STEPS:
        job_id = _job_in(factory, state)
        before = _status(factory, job_id)
        refused = client.post(f"/api/jobs/{job_id}/requeue", headers=admin_token)
        assert refused.status_code == 409, (state, refused.text)
        detail = refused.json()["detail"]
        assert f"Job {job_id} is {state} and cannot be re-queued" in detail, detail
        assert _status(factory, job_id) == before
    done = client.post(f"/api/jobs/{seeded.done_job}/requeue", headers=admin_token)
    assert done.status_code == 409 and "delivered" in done.json()["detail"]

    # A failed job is re-queued once; the second click finds it queued and is refused.
    first = client.post(f"/api/jobs/{seeded.failed_job}/requeue", headers=admin_token)
    assert first.status_code == 200, first.text
    second = client.post(f"/api/jobs/{seeded.failed_job}/requeue", headers=admin_token)
    assert second.status_code == 409 and "is queued" in second.json()["detail"]
    assert _actions(factory)[-1] == ("ops", "job.requeue", f"job {seeded.failed_job}", "refused")


def test_dashboard_requeue_button_refuses_a_done_job(
    client: TestClient, tokens: dict[str, str], seeded: Seeded, factory: SessionFactory
) -> None:
    login(client, tokens["ops"])
    page = client.get(f"/series/{seeded.done_series}")
    assert f'id="requeue-{seeded.done_job}"' not in page.text  # no button on a done job
    answer = client.post(
        f"/jobs/{seeded.done_job}/requeue",
        data={"csrf": csrf_of(page.text), "series": seeded.done_series},
    )
    assert answer.status_code == 200
    assert "cannot be re-queued" in answer.text and "delivered" in answer.text
    assert _status(factory, seeded.done_job)[0] is JobStatus.DONE


def test_a_crafted_link_cannot_put_words_on_a_page(
    client: TestClient, tokens: dict[str, str], seeded: Seeded
) -> None:
    login(client, tokens["ops"])
    forged = "Report%20delivered%20to%20the%20PACS"
    for page in (f"/series/{seeded.done_series}", "/notifications"):
        answer = client.get(f"{page}?message={forged}")
        assert answer.status_code == 200
        assert "Report delivered to the PACS" not in answer.text


def test_cli_requeue_refuses_a_running_job(
    database_url: str,
    tmp_path: Path,
    factory: SessionFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    job_id = _job_in(factory, JobStatus.STARTED)
    runtime = Settings(data_dir=tmp_path, database_url=database_url).console_runtime()
    assert admin.requeue(runtime, job_id=job_id) == 1
    said = capsys.readouterr()
    assert f"Job {job_id} is started and cannot be re-queued: a worker is running it" in said.err
    assert _status(factory, job_id) == (JobStatus.STARTED, 1)


def test_logout_ends_the_session_on_the_server(
    client: TestClient, tokens: dict[str, str], factory: SessionFactory
) -> None:
    cookie = login(client, tokens["reader"])
    page = client.get("/")
    assert page.status_code == 200 and "Worklist" in page.text
    out = client.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    # The old cookie, replayed as a thief would: the server no longer knows the session.
    client.cookies.set(COOKIE_NAME, cookie)
    again = client.get("/", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == "/login"
    assert client.get("/api/series").status_code == 401
    trail = _actions(factory)
    assert ("reader", "console.login", "dashboard", "ok") in trail
    assert ("reader", "console.logout", "dashboard", "ok") in trail


def test_a_login_opens_the_page_asked_for_and_never_another_site(
    client: TestClient, tokens: dict[str, str], seeded: Seeded
) -> None:
    page = f"/series/{seeded.done_series}?tab=slices"
    asked = client.get(page, follow_redirects=False)
    assert asked.status_code == 303
    assert (
        asked.headers["location"] == f"/login?next=%2Fseries%2F{seeded.done_series}%3Ftab%3Dslices"
    )
    form = client.get(asked.headers["location"])
    assert f'name="next" value="/series/{seeded.done_series}?tab=slices"' in form.text
    refused = client.post("/login", data={"token": "st_wrong", "next": page})
    assert refused.status_code == 401 and 'name="next"' in refused.text  # kept for the retry
    done = client.post(
        "/login", data={"token": tokens["reader"], "next": page}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == page
    # Anything that is not a page of this console opens the worklist.
    for elsewhere in (
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example/",
        "/\tevil",
        "evil.example",
        "/login",
        "",
    ):
        client.cookies.clear()
        assert client.get("/login", params={"next": elsewhere}).text.count('name="next"') == 0
        done = client.post(
            "/login", data={"token": tokens["reader"], "next": elsewhere}, follow_redirects=False
        )
        assert done.headers["location"] == "/", elsewhere
    # A form sent without a session cannot be sent again after the login: the worklist.
    client.cookies.clear()
    form_post = client.post("/logout", data={"csrf": "x"}, follow_redirects=False)
    assert form_post.status_code == 303 and form_post.headers["location"] == "/login"


def test_logout_needs_the_csrf_token(client: TestClient, tokens: dict[str, str]) -> None:
    login(client, tokens["reader"])
    assert client.post("/logout", data={"csrf": "forged"}).status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 200


def test_security_headers_on_pages_and_api(client: TestClient, tokens: dict[str, str]) -> None:
    answers = [client.get("/login"), client.get("/api/series", headers=bearer(tokens["reader"]))]
    login(client, tokens["reader"])
    answers.append(client.get("/"))
    for answer in answers:
        assert answer.headers["x-frame-options"] == "DENY"
        policy = answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in answer.headers  # plain HTTP here


def test_openapi_needs_a_token_and_shows_the_security_schemes(
    client: TestClient, tokens: dict[str, str]
) -> None:
    assert client.get("/openapi.json").status_code == 401
    document = client.get("/openapi.json", headers=bearer(tokens["reader"])).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert schemes["APIKeyCookie"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": COOKIE_NAME,
        "description": schemes["APIKeyCookie"]["description"],
    }
    assert document["paths"]["/api/series"]["get"]["security"] == [
        {"HTTPBearer": []},
        {"APIKeyCookie": []},
    ]
    requeue = document["paths"]["/api/jobs/{job_id}/requeue"]["post"]
    assert requeue["security"] == [{"HTTPBearer": []}]  # actions: bearer only
    assert requeue["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ActionOut"
    }
    assert "SeriesDetailOut" in document["components"]["schemas"]


def test_docs_are_served_without_a_cdn(client: TestClient, tokens: dict[str, str]) -> None:
    assert client.get("/docs", follow_redirects=False).headers["location"] == "/login?next=%2Fdocs"
    login(client, tokens["reader"])
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in docs.text and "/static/docs.js" in docs.text
    assert "https://" not in docs.text and "cdn" not in docs.text.lower()
    for name, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css")):
        asset = client.get(f"/docs/assets/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
        assert len(asset.content) > 100_000
    assert client.get("/docs/assets/..%2Fcore.py").status_code == 404


def test_series_page_views_and_failed_logins_are_audited(
    client: TestClient, tokens: dict[str, str], seeded: Seeded, factory: SessionFactory
) -> None:
    assert client.post("/login", data={"token": "st_wrong"}).status_code == 401
    login(client, tokens["ops"])
    assert client.get(f"/series/{seeded.done_series}").status_code == 200
    trail = _actions(factory)
    assert trail[0] == ("unknown", "console.login", "dashboard", "refused")
    assert ("ops", "series.view", f"series {seeded.done_series}", "ok") in trail
    with factory() as session:
        (view,) = [e for e in db.audit.list_actions(session=session) if e.action == "series.view"]
        assert view.detail == "Patient name and ID shown."


def test_cli_retry_export_is_audited(
    database_url: str, tmp_path: Path, seeded: Seeded, factory: SessionFactory
) -> None:
    runtime = Settings(data_dir=tmp_path, database_url=database_url).console_runtime()
    assert (
        admin.retry_outbox(
            runtime, export_ids=[seeded.dead_export], notification_ids=[], all_dead=False
        )
        == 0
    )
    assert (
        admin.retry_outbox(
            runtime, export_ids=[seeded.sent_export], notification_ids=[], all_dead=False
        )
        == 2
    )
    (ok, refused) = [t for t in _actions(factory) if t[1] == "export.retry"]
    assert ok[1:] == ("export.retry", f"export {seeded.dead_export}", "ok")
    assert ok[0].startswith("cli:")
    assert refused[1:] == ("export.retry", f"export {seeded.sent_export}", "refused")
