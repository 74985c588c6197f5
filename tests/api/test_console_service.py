"""The console's service views (issue 24): health from heartbeats, audit, notifications, CLI.

- the real listener and a worker's heartbeat hook write heartbeats; the status page and
  ``/api/status`` read them with the queue, the disk, the last instance and the dead letters;
- the audit page is the admin's; the notifications page lists every state and sends a dead
  one again (admin, audited); the API does too;
- ``stroke-triage jobs``/``exports``/``notifications`` print an error whole, wrapped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import db.audit
import db.exports
import db.heartbeats
import db.jobs
import db.notifications
import db.tokens
from console import svg
from console.app import create_app
from console.tokens import new_token, token_sha256
from db.engine import SessionFactory, create_engine_for, make_session_factory
from db.enums import ExportStatus, ProcessKind, TokenScope
from listener.config import ListenerConfig, ListenerRuntime
from listener.server import start_listener
from stroke_triage.settings import Settings
from tests.api.cases import Cases, seed_cases
from tests.api.seed import seed
from tests.api.web import bearer, csrf_of, login
from tests.helpers import free_port, migrated_sqlite, run_cli, wait_until


@pytest.fixture
def console_client(
    database_url: str, tmp_path: Path, redis_url: str, tokens: dict[str, str]
) -> Iterator[tuple[TestClient, Settings]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url=redis_url,
        task_queue=f"test-service-{uuid.uuid4().hex[:8]}",
    )
    with TestClient(create_app(settings.console_runtime())) as client:
        yield client, settings


@pytest.fixture
def cases(factory: SessionFactory, console_client: tuple[TestClient, Settings]) -> Cases:
    settings = console_client[1]
    return seed_cases(
        factory,
        base=datetime.now(UTC) - timedelta(hours=1),
        storage_dir=settings.storage_dir,
        reports_dir=settings.reports_dir,
    )


def test_status_from_heartbeats(
    console_client: tuple[TestClient, Settings],
    factory: SessionFactory,
    tokens: dict[str, str],
    cases: Cases,
) -> None:
    client, _ = console_client
    now = datetime.now(UTC)
    with factory() as session:
        db.heartbeats.beat(
            session=session,
            kind=ProcessKind.LISTENER,
            name="pacs-gw pid 10",
            details={
                "ae_title": "STROKETRIAGE",
                "port": 11112,
                "processes": 2,
                "free_disk_mb": 900.0,
                "min_free_disk_mb": 1024.0,
            },
            now=now - timedelta(hours=2),
        )
        db.heartbeats.beat(  # the same process, beating since: started 2 h ago
            session=session,
            kind=ProcessKind.LISTENER,
            name="pacs-gw pid 10",
            details={
                "ae_title": "STROKETRIAGE",
                "port": 11112,
                "processes": 2,
                "free_disk_mb": 900.0,
                "min_free_disk_mb": 1024.0,
            },
        )
        db.heartbeats.beat(
            session=session,
            kind=ProcessKind.WORKER,
            name="celery@gpu1 pid 20",
            details={"model_name": "vit-ich", "model_version": "2.0.0", "model_loaded": True},
        )
        db.heartbeats.beat(
            session=session,
            kind=ProcessKind.WORKER,
            name="celery@gpu2 pid 30",
            details={"model_name": "vit-ich", "model_version": "2.0.0", "model_loaded": False},
            now=now - timedelta(minutes=5),  # silent since
        )
        session.commit()
    found = client.get("/api/status", headers=bearer(tokens["reader"])).json()
    (listener,) = found["listeners"]
    assert listener["up"] and listener["started_at"] < listener["seen_at"]
    assert listener["details"]["ae_title"] == "STROKETRIAGE"
    assert [w["up"] for w in found["workers"]] == [False, True]  # oldest start first
    assert found["workers_up"] == 1 and found["workers_with_model"] == 1
    assert found["disk"] == {
        "free_mb": 900.0,
        "min_free_mb": 1024.0,
        "measured_by": "listener",
        "low": True,
    }
    assert found["queue_depth"] == 0 and found["last_instance_at"] is not None
    assert (found["failed_jobs"], found["dead_exports"], found["dead_notifications"]) == (0, 2, 1)
    problems = " ".join(found["problems"])
    assert "900 MB free" in problems and "listener.min_free_disk_mb" in problems
    assert "3 dead letters wait" in problems and "No worker" not in problems

    assert client.get("/status", follow_redirects=False).status_code == 303
    login(client, tokens["reader"])
    page = client.get("/status").text
    assert "up</span> since" in page and "STROKETRIAGE on port 11112" in page
    assert "1 (1 with the model loaded)" in page and "vit-ich 2.0.0" in page
    assert ">silent<" in page and "the listener refuses instances below 1024 MB" in page


def test_status_names_an_unreachable_database_instead_of_failing(tmp_path: Path) -> None:
    from console.status import service_status

    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone",
    )
    app = create_app(settings.console_runtime())
    found = service_status(app.state.console)
    assert found.problems[0].startswith("The database is not reachable")
    assert found.listeners == [] and found.workers == []


def test_the_real_listener_beats_and_says_when_it_stops(
    tmp_path: Path, tokens: dict[str, str], redis_url: str
) -> None:
    url = migrated_sqlite(tmp_path / "listener.db")
    engine = create_engine_for(url)
    sessions = make_session_factory(engine)
    listener = start_listener(
        ListenerConfig(
            host="127.0.0.1",
            port=free_port(),
            check_interval_s=0.1,
            min_free_disk_mb=0.0,
            processes=1,
        ),
        ListenerRuntime(
            storage_dir=tmp_path / "storage",
            database_url=url,
            broker_url="memory://",
            task_queue="beat-test",
        ),
    )

    def listeners() -> list[db.heartbeats.Heartbeat]:
        with sessions() as session:
            return [
                b
                for b in db.heartbeats.recent(
                    session=session, since=datetime.now(UTC) - timedelta(minutes=1)
                )
                if b.kind is ProcessKind.LISTENER
            ]

    try:
        wait_until(lambda: bool(listeners()), timeout_s=10)
        (beat,) = listeners()
        details = db.heartbeats.details_of(beat)
        assert details["ae_title"] == "STROKETRIAGE" and details["free_disk_mb"] > 0
        assert beat.stopped_at is None
    finally:
        listener.stop()
    (beat,) = listeners()
    assert beat.stopped_at is not None
    settings = Settings(data_dir=tmp_path / "data", database_url=url, broker_url=redis_url)
    token = _read_token(sessions)
    with TestClient(create_app(settings.console_runtime())) as client:
        found = client.get("/api/status", headers=bearer(token)).json()
    assert not found["listeners"][0]["up"]
    assert "No listener is up" in " ".join(found["problems"])
    engine.dispose()


def _read_token(sessions: SessionFactory) -> str:
    """A read token in this database."""
    token = new_token()
    with sessions() as session:
        db.tokens.create_token(
            session=session, name="status", scope=TokenScope.READ, token_sha256=token_sha256(token)
        )
        session.commit()
    return token


def test_a_workers_heartbeat_names_its_model(tmp_path: Path, factory: SessionFactory) -> None:
    from model.checkpoint import create_random_checkpoint
    from worker.config import WorkerConfig, WorkerRuntime
    from worker.context import WorkerContext
    from worker.monitoring import start_heartbeat

    checkpoint = create_random_checkpoint(tmp_path / "tiny", seed=0)
    ctx = WorkerContext(
        config=WorkerConfig(checkpoint=checkpoint),
        runtime=WorkerRuntime(
            storage_dir=tmp_path,
            reports_dir=tmp_path,
            database_url="sqlite://",
            broker_url="memory://",
        ),
    )
    loaded = {"yes": False}
    beating = start_heartbeat(ctx, factory, node="celery@test", model_loaded=lambda: loaded["yes"])
    try:
        with factory() as session:
            wait_until(
                lambda: bool(
                    db.heartbeats.recent(
                        session=session, since=datetime.now(UTC) - timedelta(minutes=1)
                    )
                ),
                timeout_s=10,
            )
            (beat,) = db.heartbeats.recent(
                session=session, since=datetime.now(UTC) - timedelta(minutes=1)
            )
        details = db.heartbeats.details_of(beat)
        assert beat.kind is ProcessKind.WORKER and beat.name.startswith("celery@test pid ")
        assert details["model_version"] and details["model_loaded"] is False
    finally:
        beating.stop()
    with factory() as session:
        (beat,) = db.heartbeats.recent(
            session=session, since=datetime.now(UTC) - timedelta(minutes=1)
        )
        assert beat.stopped_at is not None


def test_audit_page_is_the_admins(
    console_client: tuple[TestClient, Settings], tokens: dict[str, str], factory: SessionFactory
) -> None:
    client, _ = console_client
    with factory() as session:
        for n in range(30):
            db.audit.record_action(
                session=session, actor="ops", action="job.requeue", target=f"job {n}", result="ok"
            )
        db.audit.record_action(
            session=session,
            actor="cli:root",
            action="export.retry",
            target="export 1",
            result="refused",
            detail="already sent",
        )
        session.commit()
    login(client, tokens["reader"])
    assert client.get("/audit").status_code == 403
    assert 'id="nav-audit"' not in client.get("/").text
    login(client, tokens["ops"])
    page = client.get("/audit?size=25").text
    assert 'id="nav-audit"' in page and 'id="next-page"' in page
    assert "Entries 1\u201325 of" in page  # 31 and the logins
    refused = client.get("/audit?action=export").text
    assert "already sent" in refused and "job.requeue" not in refused
    assert "Entries 1\u20131 of 1" in client.get("/audit?actor=cli:root").text
    entries = client.get("/api/audit?action=job&limit=5", headers=bearer(tokens["ops"])).json()
    assert len(entries) == 5 and {e["action"] for e in entries} == {"job.requeue"}


def test_a_dead_notification_is_sent_again_by_an_admin_only(
    console_client: tuple[TestClient, Settings],
    tokens: dict[str, str],
    factory: SessionFactory,
    cases: Cases,
) -> None:
    client, _ = console_client
    listed = client.get("/api/notifications?status=dead", headers=bearer(tokens["reader"])).json()
    assert [n["id"] for n in listed] == [cases.dead_notification]
    assert listed[0]["series_instance_uid"] == cases.other
    url = f"/api/notifications/{cases.dead_notification}/retry"
    assert client.post(url, headers=bearer(tokens["reader"])).status_code == 403
    login(client, tokens["reader"])
    page = client.get("/notifications").text
    assert "retry-notification-" not in page  # no button for a read token
    refused = client.post(
        f"/notifications/{cases.dead_notification}/retry", data={"csrf": csrf_of(page)}
    )
    assert refused.status_code == 403

    login(client, tokens["ops"])
    page = client.get("/notifications?status=dead").text
    assert (
        client.post(
            f"/notifications/{cases.dead_notification}/retry", data={"csrf": "forged"}
        ).status_code
        == 403
    )
    done = client.post(
        f"/notifications/{cases.dead_notification}/retry", data={"csrf": csrf_of(page)}
    )
    assert done.status_code == 200 and "Back in the outbox" in done.text
    with factory() as session:
        again = db.notifications.get_notification(
            session=session, notification_id=cases.dead_notification
        )
        assert again.status is ExportStatus.PENDING
        trail = [(e.actor, e.action, e.result) for e in db.audit.list_actions(session=session)]
    assert ("ops", "notification.retry", "ok") in trail
    assert ("reader", "notification.retry", "forbidden") in trail
    sent = f"/api/notifications/{cases.sent_notification}/retry"
    assert client.post(sent, headers=bearer(tokens["ops"])).status_code == 409


LONG_ERROR = (
    "association: the PACS at 10.20.30.40:104 (AE ORTHANC) refused the connection: "
    "[Errno 111] Connection refused; tried 5 times over 31 seconds with exponential backoff; "
    "the report stays in the outbox as a dead letter until retry-export ENDMARKER"
)


def test_cli_lists_print_the_whole_error(tmp_path: Path) -> None:
    url = migrated_sqlite(tmp_path / "cli.db")
    engine = create_engine_for(url)
    sessions = make_session_factory(engine)
    seeded = seed(sessions)
    with sessions() as session:
        export = db.exports.get_export(session=session, export_id=seeded.dead_export)
        export.last_error = LONG_ERROR
        job = db.jobs.get_job(session=session, job_id=seeded.failed_job)
        job.last_error = LONG_ERROR
        notification = db.notifications.ensure_notification(
            session=session,
            job_id=seeded.failed_job,
            result_id=None,
            event="failed",
            event_key=f"job:{seeded.failed_job}",
            destination="it-team",
            channel="webhook",
            idempotency_key="k1",
            payload="{}",
            source_path=None,
        )
        db.notifications.mark_notification_failed(
            session=session,
            notification_id=notification.id,
            error=LONG_ERROR,
            max_attempts=1,
            backoff_s=1,
        )
        session.commit()
    engine.dispose()
    env = {
        "STROKE_TRIAGE_DATA_DIR": str(tmp_path),
        "STROKE_TRIAGE_DATABASE_URL": url,
        "COLUMNS": "120",
    }
    for command in (
        ["exports", "--status", "dead"],
        ["jobs", "--status", "failed"],
        ["notifications", "--status", "dead"],
    ):
        done = run_cli(command, env)
        assert done.returncode == 0, done.stderr
        words = " ".join(done.stdout.split())
        assert " ".join(LONG_ERROR.split()) in words, (command, done.stdout)
        assert max(len(line) for line in done.stdout.splitlines()) <= 160


def test_day_labels_leave_room_for_each_other() -> None:
    days = [(f"2026-03-{d:02d}", d) for d in range(1, 31)]
    chart = svg.bar_chart(days, highlight=[1] * 30)
    labels = chart.count('class="axis day"')
    assert 10 <= labels < 30 and ">03-30</text>" in chart  # the last day is always labelled
    assert svg.label_step(7, slot_width=82) == 1 and svg.label_step(90, slot_width=6.4) == 7
