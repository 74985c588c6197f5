"""Delivered means delivered: redirects, TLS and patient data on the way out (real peers).

A redirect is never followed (the target got nothing, and no credential goes to another host);
a password never travels in clear; e-mail offers implicit TLS; HL7 offers TLS and sends the
patient's ID and name only on opt-in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import db.exports
import db.notifications
from db.enums import ExportStatus
from tests.helpers import run_cli
from tests.notify_peers import (
    Certificate,
    MllpListener,
    RecordingHttpServer,
    RedirectingServer,
    SmtpServer,
    make_certificate,
)
from tests.worker.helpers import ACCESSION, notify_context, receive_accessioned_series
from worker.config import WorkerRuntime
from worker.context import WorkerContext
from worker.notify.config import EmailDestination
from worker.pipeline import process_series

ANY_VERDICT = ["suspected", "not_suspected"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def elsewhere() -> Iterator[RecordingHttpServer]:
    """The other host a redirect points at: it must never hear from us."""
    server = RecordingHttpServer()
    yield server
    server.stop()


def _run(ctx: WorkerContext) -> tuple[int, str]:
    job_id, series_uid = receive_accessioned_series(ctx)
    process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    return job_id, series_uid


def _notification(ctx: WorkerContext) -> Any:
    with ctx.sessions() as session:
        (row,) = db.notifications.list_notifications(session=session)
        session.expunge_all()
        return row


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_webhook_that_redirects_is_a_failure_and_nothing_goes_to_the_other_host(
    runtime: WorkerRuntime,
    checkpoint: Path,
    certificate: Certificate,
    elsewhere: RecordingHttpServer,
    status: int,
) -> None:
    redirecting = RedirectingServer(certificate, location=elsewhere.url, status=status)
    try:
        destination = {
            "kind": "webhook",
            "name": "pager",
            "url": redirecting.url,
            "secret": "s3cret",
            "ca_file": str(certificate.cert),
            "on": ANY_VERDICT,
        }
        ctx = notify_context(runtime, checkpoint, notifications=[destination])
        _run(ctx)
    finally:
        redirecting.stop()
    assert redirecting.requests == 1
    assert elsewhere.requests == []  # no GET, no signature, no Idempotency-Key elsewhere
    row = _notification(ctx)
    assert row.status == ExportStatus.FAILED
    assert row.last_error.startswith("http_redirect: The webhook pager failed: it answered ")
    assert f"HTTP {status}" in row.last_error and "localhost" in row.last_error


def test_a_stow_rs_target_that_redirects_is_a_failure_and_keeps_its_token(
    runtime: WorkerRuntime,
    checkpoint: Path,
    certificate: Certificate,
    elsewhere: RecordingHttpServer,
) -> None:
    redirecting = RedirectingServer(certificate, location=elsewhere.url)
    try:
        dicomweb = {
            "url": redirecting.url,
            "token": "bearer-secret",
            "ca_file": str(certificate.cert),
        }
        ctx = notify_context(runtime, checkpoint, dicomweb=[dicomweb])
        job_id, _ = _run(ctx)
    finally:
        redirecting.stop()
    assert redirecting.requests == 1
    assert elsewhere.requests == []  # the bearer token never left for the redirect's host
    with ctx.sessions() as session:
        (export,) = db.exports.list_exports(session=session)
        assert export.status == ExportStatus.FAILED
        assert export.last_error.startswith(f"http_redirect: STOW-RS to {redirecting.url} failed")
        assert "HTTP 302 Found" in export.last_error
        job = db.jobs.get_job(session=session, job_id=job_id)
        assert job.exported_at is None  # nothing is reported as delivered


def test_e_mail_with_a_username_but_no_tls_is_refused_at_start_up() -> None:
    destination = {
        "kind": "email",
        "name": "stroke-team",
        "host": "smtp.hospital.local",
        "port": 25,
        "starttls": False,
        "username": "triage",
        "password": "pw",
        "sender": "triage@hospital.test",
        "recipients": ["stroke@hospital.test"],
    }
    env = {"STROKE_TRIAGE_WORKER__NOTIFICATIONS": json.dumps([destination])}
    refused = run_cli(["settings"], env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "worker.notifications.0.email" in refused.stderr
    assert "starttls = false" in refused.stderr and "implicit_tls = true" in refused.stderr
    without_login = {k: v for k, v in destination.items() if k not in ("username", "password")}
    env = {"STROKE_TRIAGE_WORKER__NOTIFICATIONS": json.dumps([without_login])}
    accepted = run_cli(["settings"], env)  # a relay on a trusted network, no password
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_e_mail_with_implicit_tls_defaults_to_the_smtps_port() -> None:
    base = {"kind": "email", "name": "m", "host": "smtp", "sender": "a@b", "recipients": ["c@d"]}
    assert EmailDestination.model_validate(base).port == 587
    assert EmailDestination.model_validate({**base, "implicit_tls": True}).port == 465
    assert (
        EmailDestination.model_validate({**base, "implicit_tls": True, "port": 2465}).port == 2465
    )


def test_e_mail_over_implicit_tls_logs_in_and_is_delivered(
    runtime: WorkerRuntime, checkpoint: Path, certificate: Certificate
) -> None:
    smtp = SmtpServer(certificate, user="triage", password="pw", implicit_tls=True)
    try:
        ctx = notify_context(runtime, checkpoint, notifications=[smtp.destination(on=ANY_VERDICT)])
        _run(ctx)
    finally:
        smtp.stop()
    assert smtp.logins == ["triage"]
    (message,) = smtp.messages
    assert message["Subject"].endswith(f" - {ACCESSION}")
    assert _notification(ctx).status == ExportStatus.SENT


def test_hl7_over_tls_names_the_patient_only_on_opt_in(
    runtime: WorkerRuntime, checkpoint: Path, certificate: Certificate
) -> None:
    secure = MllpListener("AA", certificate=certificate)
    try:
        hl7 = {
            "kind": "hl7",
            "host": "127.0.0.1",
            "port": secure.port,
            "tls": True,
            "ca_file": str(certificate.cert),
            "on": ANY_VERDICT,
        }
        ctx = notify_context(
            runtime,
            checkpoint,
            notifications=[
                {**hl7, "name": "ris"},
                {**hl7, "name": "ris-identified", "include_patient_identifiers": True},
            ],
        )
        _run(ctx)
    finally:
        secure.stop()
    with ctx.sessions() as session:
        rows = db.notifications.list_notifications(session=session)
        assert {row.status for row in rows} == {ExportStatus.SENT}
    patients = {
        message.oru_r01_patient_result.oru_r01_patient.pid.pid_3.to_er7(): (
            message.oru_r01_patient_result.oru_r01_patient.pid.pid_5.to_er7()
        )
        for message in secure.messages
    }
    assert patients == {"UNKNOWN": "UNKNOWN", "PHANTOM": "PHANTOM^HEAD"}


def test_hl7_with_tls_refuses_an_untrusted_certificate(
    runtime: WorkerRuntime, checkpoint: Path, certificate: Certificate
) -> None:
    secure = MllpListener("AA", certificate=certificate)
    try:
        destination = {
            "kind": "hl7",
            "name": "ris",
            "host": "127.0.0.1",
            "port": secure.port,
            "tls": True,  # verify_tls is on and the test CA is not trusted
            "on": ANY_VERDICT,
        }
        ctx = notify_context(runtime, checkpoint, notifications=[destination])
        _run(ctx)
    finally:
        secure.stop()
    row = _notification(ctx)
    assert row.status == ExportStatus.FAILED and secure.messages == []
    assert row.last_error.startswith("tls_failed: The HL7 destination ris is not reachable")


def test_an_e_mail_refused_for_some_recipients_is_not_counted_as_sent(
    runtime: WorkerRuntime, checkpoint: Path, certificate: Certificate
) -> None:
    """The server takes the message for one recipient and refuses the other (550 at RCPT):
    the notification is a failure naming who did not get it, never "sent"."""
    smtp = SmtpServer(
        certificate,
        user="triage",
        password="pw",
        implicit_tls=True,
        refuse=frozenset({"gone@hospital.test"}),
    )
    try:
        destination = smtp.destination(
            recipients=["stroke@hospital.test", "gone@hospital.test"], on=ANY_VERDICT
        )
        ctx = notify_context(runtime, checkpoint, notifications=[destination])
        _run(ctx)
    finally:
        smtp.stop()
    assert smtp.mailbox.delivered_to == [["stroke@hospital.test"]]  # the server took it for one
    row = _notification(ctx)
    assert row.status == ExportStatus.FAILED and row.sent_at is None
    assert row.last_error == (
        "refused: The SMTP server of stroke-team refused 1 of 2 recipients: "
        "gone@hospital.test (SMTP 550); the others got the e-mail."
    )
