"""Notifications through the outbox, against real peers on 127.0.0.1 (HTTPS, SMTP, MLLP)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import db.jobs
import db.notifications
from console import routes_pages
from db.enums import ExportStatus, NotificationChannel, NotificationEvent
from tests.helpers import run_cli
from tests.notify_peers import (
    Certificate,
    MllpListener,
    SmtpServer,
    WebhookReceiver,
    make_certificate,
)
from tests.worker.helpers import (
    ACCESSION,
    multi_label_checkpoint,
    notify_context,
    receive_accessioned_series,
)
from worker.config import WorkerConfig, WorkerRuntime
from worker.context import WorkerContext
from worker.notify.message import series_page_url
from worker.notify.send import sweep_notifications
from worker.pipeline import process_series

CONSOLE_URL = "https://triage.hospital.local/console"
CODING = "99STROKETRIAGE"
ANY_VERDICT = ["suspected", "not_suspected"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def _notifications(ctx: WorkerContext) -> list[Any]:
    with ctx.sessions() as session:
        rows = db.notifications.list_notifications(session=session)
        session.expunge_all()
        return rows


def _run(ctx: WorkerContext, times: int = 1) -> tuple[int, str]:
    job_id, series_uid = receive_accessioned_series(ctx)
    for _ in range(times):
        process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    return job_id, series_uid


@pytest.fixture
def webhook(certificate: Certificate) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(certificate, secret=b"s3cret", answers=[500])
    yield receiver
    receiver.stop()


def test_webhook_is_signed_over_tls_and_accepted_once_after_a_500(
    runtime: WorkerRuntime, checkpoint: Path, webhook: WebhookReceiver, certificate: Certificate
) -> None:
    ctx = notify_context(
        runtime,
        checkpoint,
        notifications=[webhook.destination(on=ANY_VERDICT)],
        console_url=f"{CONSOLE_URL}/",  # a trailing slash is dropped
    )
    job_id, series_uid = _run(ctx, times=2)  # a re-run queues nothing new
    (row,) = _notifications(ctx)
    assert row.status == ExportStatus.FAILED and "500" in (row.last_error or "")
    time.sleep(0.1)
    assert sweep_notifications(ctx.sessions, config=ctx.config) == 1
    assert sweep_notifications(ctx.sessions, config=ctx.config) == 0
    assert webhook.rejected == 0 and len(webhook.requests) == 2
    (document,) = webhook.accepted
    assert document["series_instance_uid"] == series_uid
    assert document["accession_number"] == ACCESSION
    assert document["idempotency_key"] == document["_idempotency_header"] == row.idempotency_key
    assert document["verdict"] in ("SUSPECTED", "NOT SUSPECTED")
    assert 0.0 <= document["probability"] <= 1.0 and document["model_version"]
    assert "PHANTOM" not in json.dumps(document)  # no patient name or ID in the webhook
    assert document["series_url"] == f"{CONSOLE_URL}/series/{series_uid}"
    (row,) = _notifications(ctx)
    assert row.status == ExportStatus.SENT and row.attempts == 2 and row.job_id == job_id


def test_webhook_with_the_wrong_secret_is_rejected_and_dead_letters(
    runtime: WorkerRuntime, checkpoint: Path, webhook: WebhookReceiver, certificate: Certificate
) -> None:
    ctx = notify_context(
        runtime,
        checkpoint,
        export_max_attempts=2,
        notifications=[webhook.destination(secret="wrong", on=ANY_VERDICT)],
    )
    _run(ctx)
    time.sleep(0.1)
    sweep_notifications(ctx.sessions, config=ctx.config)
    assert webhook.rejected == 2 and webhook.accepted == []
    (row,) = _notifications(ctx)
    assert row.status == ExportStatus.DEAD and "401" in (row.last_error or "")
    env = {"STROKE_TRIAGE_DATABASE_URL": runtime.database_url}
    listed = run_cli(["notifications", "--status", "dead"], env)
    assert listed.returncode == 0, listed.stderr
    assert "pager" in listed.stdout and row.idempotency_key in listed.stdout
    retried = run_cli(["retry-export", "--notification", str(row.id)], env)
    assert retried.returncode == 0, retried.stderr
    assert "1 notification(s) back in the outbox." in retried.stdout
    assert _notifications(ctx)[0].status == ExportStatus.PENDING


def test_webhook_refuses_an_untrusted_certificate(
    runtime: WorkerRuntime, checkpoint: Path, webhook: WebhookReceiver, certificate: Certificate
) -> None:
    destination = webhook.destination(on=ANY_VERDICT)
    del destination["ca_file"]  # TLS verification is on by default: the test CA is unknown
    ctx = notify_context(runtime, checkpoint, notifications=[destination])
    _run(ctx)
    (row,) = _notifications(ctx)
    assert row.status == ExportStatus.FAILED and "CERTIFICATE_VERIFY_FAILED" in row.last_error
    assert webhook.requests == []


def test_email_goes_over_starttls_with_login_and_names_no_patient(
    runtime: WorkerRuntime, checkpoint: Path, certificate: Certificate
) -> None:
    smtp = SmtpServer(certificate, user="triage", password="pw")
    try:
        destination = smtp.destination(on=ANY_VERDICT)
        ctx = notify_context(runtime, checkpoint, notifications=[destination])
        _, series_uid = _run(ctx, times=2)
    finally:
        smtp.stop()
    assert smtp.logins == ["triage"]
    (message,) = smtp.messages
    (row,) = _notifications(ctx)
    verdict = "SUSPECTED" if row.event == NotificationEvent.SUSPECTED else "NOT SUSPECTED"
    assert message["Subject"] == f"AI STROKE TRIAGE: {verdict} - {ACCESSION}"
    assert message["To"] == "stroke@hospital.test"
    assert message["Message-ID"] == f"<{row.idempotency_key}@stroke-triage>"
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    body = payload.decode()
    assert series_uid in body and "Probability:" in body
    assert "PHANTOM" not in body
    assert row.status == ExportStatus.SENT


def _hl7(name: str, port: int) -> dict[str, Any]:
    return {"kind": "hl7", "name": name, "host": "127.0.0.1", "port": port, "on": ANY_VERDICT}


def test_hl7_oru_is_acknowledged_and_a_negative_ack_is_a_failure(
    runtime: WorkerRuntime, checkpoint: Path
) -> None:
    accepting, refusing = MllpListener("AA"), MllpListener("AE")
    try:
        ctx = notify_context(
            runtime,
            checkpoint,
            export_max_attempts=2,
            notifications=[_hl7("ris", accepting.port), _hl7("ris-broken", refusing.port)],
        )
        _run(ctx)
        time.sleep(0.1)
        sweep_notifications(ctx.sessions, config=ctx.config)
    finally:
        accepting.stop()
        refusing.stop()
    rows = {row.destination: row for row in _notifications(ctx)}
    assert rows["ris"].status == ExportStatus.SENT and rows["ris"].attempts == 1
    assert rows["ris-broken"].status == ExportStatus.DEAD
    assert "AE" in (rows["ris-broken"].last_error or "")
    (message,) = accepting.messages
    assert len(refusing.messages) == 2
    assert message.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    assert message.msh.msh_12.to_er7() == "2.5.1"
    assert message.msh.msh_10.to_er7() == rows["ris"].idempotency_key
    result = message.oru_r01_patient_result
    # No patient identifiers without include_patient_identifiers: the accession matches.
    assert result.oru_r01_patient.pid.pid_3.to_er7() == "UNKNOWN"
    assert result.oru_r01_patient.pid.pid_5.to_er7() == "UNKNOWN"
    order = result.oru_r01_order_observation
    assert order.obr.obr_3.to_er7() == ACCESSION
    finding = ctx.classifier.spec.finding.short_name  # the service is named after the finding
    assert order.obr.obr_4.to_er7().startswith(f"{finding.upper()}-AI^AI {finding} triage^")
    values = [group.obx.obx_5.to_er7() for group in order.oru_r01_observation]
    assert values[0] in ("SUSPECTED", "NOT SUSPECTED")
    assert 0.0 <= float(values[1]) <= 1.0


def test_a_failed_job_is_told_to_destinations_that_want_failures(
    runtime: WorkerRuntime, checkpoint: Path, webhook: WebhookReceiver, certificate: Certificate
) -> None:
    webhook.answers.clear()
    destination = webhook.destination(on=["failed"])
    ctx = notify_context(runtime, checkpoint, notifications=[destination])
    job_id, series_uid = receive_accessioned_series(ctx)
    with ctx.sessions() as session:
        db.jobs.start_job(session=session, job_id=job_id, worker="w")
        db.jobs.fail_job(
            session=session, job_id=job_id, error="SeriesUnreadableError: x", final=True
        )
        session.commit()
    for _ in range(2):
        sweep_notifications(ctx.sessions, config=ctx.config)
    (document,) = webhook.accepted
    assert document["event"] == "failed" and document["series_instance_uid"] == series_uid
    assert "could not be classified" in document["reason"]
    assert document["series_url"] is None  # no console URL configured: no link


def test_the_series_url_is_the_admin_consoles_series_page() -> None:
    # The link the webhook carries must be a page the console serves.
    paths = {getattr(route, "path", "") for route in routes_pages.router.routes}
    assert "/series/{series_instance_uid}" in paths
    assert series_page_url(CONSOLE_URL, "1.2.3") == f"{CONSOLE_URL}/series/1.2.3"
    assert series_page_url(None, "1.2.3") is None
    with pytest.raises(ValueError, match="console_url"):
        WorkerConfig(console_url="triage.hospital.local")


@pytest.mark.parametrize(
    ("destination", "named"),
    [
        ({"kind": "webhook", "name": "w", "url": "x", "secret": "s", "on": ["bad"]}, "on.0"),
        ({"kind": "webhook", "name": "w", "url": "hooks.example/x", "secret": "s"}, "url"),
        ({"kind": "hl7", "name": "h", "host": "ris", "port": 70000}, "port"),
        (
            {"kind": "hl7", "name": "h", "host": "ris", "port": 2575, "sending_facility": "F" * 21},
            "sending_facility",
        ),
        (
            {"kind": "webhook", "name": "w", "url": "https://u:pw@hooks.example/x", "secret": "s"},
            "url",
        ),
    ],
)
def test_bad_notification_settings_are_refused_at_start_up(
    destination: dict[str, Any], named: str
) -> None:
    env = {"STROKE_TRIAGE_WORKER__NOTIFICATIONS": json.dumps([destination])}
    completed = run_cli(["settings"], env)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "invalid settings" in completed.stderr
    assert f"worker.notifications.0.{destination['kind']}.{named}" in completed.stderr


def test_a_webhook_that_answers_something_not_http_is_a_counted_failure(
    runtime: WorkerRuntime, checkpoint: Path
) -> None:
    # http.client raises BadStatusLine (not an OSError): the row must still back off and die,
    # not stay claimed and come back forever, nor stop the sweep.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        answering = threading.Thread(target=_answer_garbage, args=(server,), daemon=True)
        answering.start()
        destination = {
            "kind": "webhook",
            "name": "odd",
            "url": f"http://127.0.0.1:{port}/hook",
            "secret": "s",
            "on": ANY_VERDICT,
            "allow_plain_http": True,
        }
        ctx = notify_context(
            runtime, checkpoint, export_max_attempts=1, notifications=[destination]
        )
        job_id, series_uid = receive_accessioned_series(ctx)
        with ctx.sessions() as session:
            db.notifications.ensure_notification(
                session=session,
                job_id=job_id,
                result_id=None,
                event=NotificationEvent.FAILED,
                event_key=f"job:{job_id}",
                destination="odd",
                channel=NotificationChannel.WEBHOOK,
                idempotency_key="K1",
                payload=json.dumps(
                    {
                        "idempotency_key": "K1",
                        "event": "failed",
                        "verdict": "FAILED",
                        "series_instance_uid": series_uid,
                    }
                ),
                source_path=None,
            )
            session.commit()
        assert sweep_notifications(ctx.sessions, config=ctx.config) == 0
        answering.join(5)
    (row,) = _notifications(ctx)
    assert row.status == ExportStatus.DEAD and row.attempts == 1
    assert row.last_error == "bad_answer: The webhook odd failed: its answer is not HTTP."


def _answer_garbage(server: socket.socket) -> None:
    connection, _ = server.accept()
    with connection:
        connection.recv(65536)
        connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")


def test_a_patient_name_with_hl7_delimiters_stays_one_field_in_the_oru() -> None:
    from hl7apy.parser import parse_message

    from worker.notify.hl7 import patient_name_xpn

    xpn = patient_name_xpn("O|Brien&Co^Mary~Ann^^Dr^Jr=IDEOGRAPHIC")
    assert xpn == "O\\F\\Brien\\T\\Co^Mary\\R\\Ann^^Jr^Dr"
    message = parse_message(
        f"MSH|^~\\&|A|B|C|D|20261130120000||ORU^R01^ORU_R01|1|P|2.5.1\rPID|1||ID1||{xpn}",
        find_groups=False,
    )
    name = message.pid.pid_5
    assert name.xpn_1.to_er7() == "O\\F\\Brien\\T\\Co"
    assert name.xpn_2.to_er7() == "Mary\\R\\Ann"
    assert name.xpn_4.to_er7() == "Jr" and name.xpn_5.to_er7() == "Dr"
    assert patient_name_xpn("Doe^John") == "Doe^John"


def test_a_plain_http_webhook_needs_an_explicit_setting() -> None:
    destination = {"kind": "webhook", "name": "w", "url": "http://pager.local/x", "secret": "s"}
    env = {"STROKE_TRIAGE_WORKER__NOTIFICATIONS": json.dumps([destination])}
    refused = run_cli(["settings"], env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "worker.notifications.0.webhook" in refused.stderr
    assert "allow_plain_http" in refused.stderr
    allowed = {**destination, "allow_plain_http": True}
    env = {"STROKE_TRIAGE_WORKER__NOTIFICATIONS": json.dumps([allowed])}
    accepted = run_cli(["settings"], env)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_a_multi_label_models_alert_names_the_driving_finding_and_lists_the_others(
    runtime: WorkerRuntime,
    tmp_path: Path,
    webhook: WebhookReceiver,
    certificate: Certificate,
) -> None:
    smtp = SmtpServer(certificate, user="triage", password="pw")
    ris = MllpListener("AA")
    try:
        email = smtp.destination(name="team", recipients=["team@hospital.test"], on=ANY_VERDICT)
        ctx = notify_context(
            runtime,
            multi_label_checkpoint(tmp_path / "ckpt"),
            notifications=[webhook.destination(on=ANY_VERDICT), email, _hl7("ris", ris.port)],
        )
        _run(ctx)
        time.sleep(0.1)
        sweep_notifications(ctx.sessions, config=ctx.config)
    finally:
        smtp.stop()
        ris.stop()
    (document,) = webhook.accepted
    assert (document["finding_name"], document["finding_meaning"]) == (
        "ICH",
        "Intracranial hemorrhage",
    )
    further = document["further_findings"]
    assert [(f["finding_name"], f["finding_meaning"]) for f in further] == [
        ("EDH", "Epidural hemorrhage"),
        ("SDH", "Subdural hemorrhage"),
    ]
    assert all(0.0 <= f["probability"] <= 1.0 for f in further)
    (message,) = smtp.messages
    assert str(message["Subject"]).startswith("AI ICH TRIAGE: ")
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    listed = ", ".join(f"{f['finding_meaning']} {f['probability']:.2f}" for f in further)
    assert f"Further findings (probability only): {listed}" in payload.decode()
    (oru,) = ris.messages
    order = oru.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_4.to_er7().startswith("ICH-AI^AI ICH triage^")
    observations = [
        (group.obx.obx_3.to_er7(), group.obx.obx_5.to_er7()) for group in order.oru_r01_observation
    ]
    assert observations[-2:] == [
        (
            f"PROB-EDH^Probability of Epidural hemorrhage^{CODING}",
            f"{further[0]['probability']:.4f}",
        ),
        (
            f"PROB-SDH^Probability of Subdural hemorrhage^{CODING}",
            f"{further[1]['probability']:.4f}",
        ),
    ]


def test_a_plain_http_dicomweb_server_needs_an_explicit_setting() -> None:
    """STOW-RS carries the reports (patient data): https by default, http only on opt-in."""
    server = {"url": "http://pacs.local/dicom-web", "token": "t"}
    env = {"STROKE_TRIAGE_WORKER__DICOMWEB": json.dumps([server])}
    refused = run_cli(["settings"], env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "worker.dicomweb.0" in line and "allow_plain_http" in line, line
    assert (
        run_cli(
            ["settings"],
            {
                **env,
                "STROKE_TRIAGE_WORKER__DICOMWEB": json.dumps(
                    [{**server, "url": "https://pacs.local/dicom-web"}]
                ),
            },
        ).returncode
        == 0
    )
    allowed = {**server, "allow_plain_http": True}
    env = {"STROKE_TRIAGE_WORKER__DICOMWEB": json.dumps([allowed])}
    accepted = run_cli(["settings"], env)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
