"""One outage, one page to IT: failures are IT events, told once per series, beside the verdict.

Against real peers: HTTPS webhook receivers (a clinical one and an IT one) and a PACS that is
down (a closed port), on the worker's own SQLite database.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from pydicom.uid import generate_uid

import db.jobs
import db.notifications
from db.enums import JobStatus, NotificationEvent
from tests.helpers import free_port, record_head_ct_series, seed_job
from tests.notify_peers import Certificate, WebhookReceiver, make_certificate
from tests.worker.helpers import ACCESSION, notify_context, receive_accessioned_series
from worker.celery_app import create_celery_app
from worker.config import WorkerRuntime
from worker.inputs import SeriesInputs, load_inputs
from worker.notify import email, hl7
from worker.notify.config import Hl7Destination
from worker.notify.message import Identifiers, Notice, ResultFacts, build_payload, load_notice
from worker.notify.send import sweep_notifications
from worker.pipeline import process_series
from worker.preview import PreviewText, verdict_line
from worker.report import Finding, summary_text

ANY_VERDICT = ["suspected", "not_suspected"]
TASK_NAME = "stroke_triage.process_series"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def clinical(certificate: Certificate) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(certificate, secret=b"clinical")
    yield receiver
    receiver.stop()


@pytest.fixture
def it_desk(certificate: Certificate) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(certificate, secret=b"it")
    yield receiver
    receiver.stop()


def _closed_pacs(name: str) -> dict[str, Any]:
    return {"ae_title": name, "host": "127.0.0.1", "port": free_port()}


def test_a_pacs_outage_pages_it_once_per_series_and_the_stroke_team_keeps_the_verdict(
    runtime: WorkerRuntime,
    checkpoint: Path,
    certificate: Certificate,
    clinical: WebhookReceiver,
    it_desk: WebhookReceiver,
) -> None:
    ctx = notify_context(
        runtime,
        checkpoint,
        export_max_attempts=1,  # the first failed send is a dead letter
        pacs=[_closed_pacs("PACS1"), _closed_pacs("PACS2")],  # two objects die
        notifications=[
            clinical.destination(name="stroke-team", on=ANY_VERDICT),
            it_desk.destination(name="it-desk", on=["failed"]),
        ],
    )
    job_id, series_uid = receive_accessioned_series(ctx)
    outcome = process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    verdict = "SUSPECTED" if outcome.suspected else "NOT SUSPECTED"
    for _ in range(3):  # every sweep round; nothing is told twice
        sweep_notifications(ctx.sessions, config=ctx.config)

    # The stroke team got the verdict once (sent after the SR was tried), and no failure.
    (told,) = clinical.accepted
    assert told["event"] in ANY_VERDICT and told["verdict"] == verdict
    assert told["finding_name"] == "stroke" and told["failure"] is None
    # IT got one message for the series, however many objects died, with the cause.
    (page,) = it_desk.accepted
    assert page["event"] == "failed" and page["series_instance_uid"] == series_uid
    assert page["failure"] == "report_not_delivered"
    assert page["verdict"] == verdict  # the clinical verdict is kept, never "FAILED"
    assert page["error_code"] == "connection_refused"
    assert "PACS1@127.0.0.1" in page["reason"] and "PACS2@127.0.0.1" in page["reason"]
    assert "the connection was refused" in page["reason"]
    with ctx.sessions() as session:
        assert db.jobs.get_job(session=session, job_id=job_id).status == JobStatus.EXPORT_FAILED


def test_a_long_outage_tells_every_failure_not_only_the_first_hundred(
    runtime: WorkerRuntime, checkpoint: Path, certificate: Certificate, it_desk: WebhookReceiver
) -> None:
    ctx = notify_context(
        runtime, checkpoint, notifications=[it_desk.destination(name="it-desk", on=["failed"])]
    )
    count = 130
    with ctx.sessions() as session:
        for n in range(count):
            series = f"1.2.826.0.1.3680043.10.8.{n}.1"
            record_head_ct_series(session, series=series, count=1)
            seed_job(session, series=series, stage="failed")
        session.commit()
    sent = [sweep_notifications(ctx.sessions, config=ctx.config) for _ in range(3)]
    assert sum(sent) == count, sent
    told = {document["series_instance_uid"] for document in it_desk.accepted}
    assert len(told) == count


def test_a_failed_job_tells_its_code_and_our_words_never_the_librarys_text(
    runtime: WorkerRuntime, checkpoint: Path, certificate: Certificate, it_desk: WebhookReceiver
) -> None:
    ctx = notify_context(
        runtime, checkpoint, notifications=[it_desk.destination(name="it-desk", on=["failed"])]
    )
    job_id, series_uid = receive_accessioned_series(ctx)
    broken = sorted((runtime.storage_dir / "series").glob("*.dcm"))[2]
    broken.write_bytes(b"\x00" * 200)  # present but not DICOM: pydicom's error names "DICM"
    app: Celery = create_celery_app(ctx.config, runtime)
    app.conf.task_always_eager = True
    outcome = app.tasks[TASK_NAME].apply(
        kwargs={"job_id": job_id, "series_instance_uid": series_uid}
    )
    assert outcome.failed()
    with ctx.sessions() as session:
        job = db.jobs.get_job(session=session, job_id=job_id)
        assert job.status == JobStatus.FAILED
        assert job.last_error == (
            f"series_unreadable: Instance {broken.name} of series {series_uid} is not "
            "readable DICOM."
        )
    sweep_notifications(ctx.sessions, config=ctx.config)
    (page,) = it_desk.accepted
    assert page["failure"] == "not_classified" and page["verdict"] is None
    assert page["error_code"] == "series_unreadable"
    assert "DICM" not in json.dumps(page) and "Error" not in page["reason"]


def _notice(
    event: NotificationEvent,
    *,
    suspected: bool = True,
    probability: float = 0.8712345,
    threshold: float = 0.5,
    **payload: Any,
) -> Notice:
    facts = ResultFacts(
        suspected=suspected,
        probability=probability,
        threshold=threshold,
        model_name="vit-ich",
        model_version="2.0",
        finding_name="ICH",
        finding_meaning="Intracranial hemorrhage",
    )
    document = build_payload(
        key="K1",
        event=event,
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        calling_ae_title="CT1",
        result=facts,
        **payload,
    )
    return Notice(json.loads(document), Identifiers(accession_number="ACC1"))


def test_messages_name_the_models_finding_from_the_result() -> None:
    notice = _notice(NotificationEvent.SUSPECTED)
    assert email.subject(notice) == "AI ICH TRIAGE: SUSPECTED - ACC1"
    body = email.body(notice, include_patient_name=False)
    assert "Intracranial hemorrhage suspected" in body and "Probability: 0.87" in body
    assert notice.document()["finding_meaning"] == "Intracranial hemorrhage"
    destination = Hl7Destination(kind="hl7", name="ris", host="ris", port=2575)
    oru = hl7.build_oru(destination, notice)
    assert "Intracranial hemorrhage suspected" in oru and "|SUSPECTED|" in oru

    failed = _notice(NotificationEvent.FAILED, failure="report_not_delivered", reason="x")
    assert email.subject(failed) == "AI ICH TRIAGE: REPORT NOT DELIVERED - ACC1"
    assert "The verdict stands: SUSPECTED" in email.body(failed, include_patient_name=False)


def test_verdict_destinations_get_no_failure_and_failure_destinations_no_verdict(
    runtime: WorkerRuntime, checkpoint: Path, certificate: Certificate, it_desk: WebhookReceiver
) -> None:
    """The `failed` routing: an IT destination hears only of failures."""
    ctx = notify_context(
        runtime, checkpoint, notifications=[it_desk.destination(name="it-desk", on=["failed"])]
    )
    job_id, series_uid = receive_accessioned_series(ctx)
    process_series(ctx, job_id=job_id, series_instance_uid=series_uid)  # no PACS: done
    sweep_notifications(ctx.sessions, config=ctx.config)
    assert it_desk.requests == []
    with ctx.sessions() as session:
        assert db.notifications.list_notifications(session=session) == []
        assert db.jobs.get_job(session=session, job_id=job_id).status == JobStatus.DONE


def _run_task(ctx: Any, runtime: WorkerRuntime, job_id: int, series_uid: str) -> Any:
    app: Celery = create_celery_app(ctx.config, runtime)
    app.conf.task_always_eager = True
    return app.tasks[TASK_NAME].apply(kwargs={"job_id": job_id, "series_instance_uid": series_uid})


def test_a_report_that_cannot_be_written_still_sends_the_verdict_and_pages_it(
    runtime: WorkerRuntime,
    checkpoint: Path,
    certificate: Certificate,
    clinical: WebhookReceiver,
    it_desk: WebhookReceiver,
) -> None:
    """The job fails after classification (its SR cannot be written): the stroke team still
    hears the verdict, at once, and IT hears that the report was not made (not "not
    classified")."""
    ctx = notify_context(
        runtime,
        checkpoint,
        task_max_retries=0,
        pacs=[_closed_pacs("PACS1")],
        notifications=[
            clinical.destination(name="stroke-team", on=ANY_VERDICT),
            it_desk.destination(name="it-desk", on=["failed"]),
        ],
    )
    job_id, series_uid = receive_accessioned_series(ctx)
    runtime.reports_dir.write_bytes(b"not a folder")  # the SR cannot be written
    assert _run_task(ctx, runtime, job_id, series_uid).failed()

    (told,) = clinical.accepted  # sent by the failing job itself, before any sweep
    assert told["event"] in ANY_VERDICT and told["failure"] is None
    for _ in range(2):
        sweep_notifications(ctx.sessions, config=ctx.config)
    assert len(clinical.accepted) == 1  # told once
    (page,) = it_desk.accepted
    assert page["event"] == "failed" and page["failure"] == "report_not_delivered"
    assert page["verdict"] == told["verdict"] and page["error_code"] == "report_failed"
    assert page["reason"].startswith("The report could not be made: ")
    with ctx.sessions() as session:
        assert db.jobs.get_job(session=session, job_id=job_id).status == JobStatus.FAILED


def test_a_verdict_alert_refused_while_the_report_failed_is_sent_by_the_sweeper(
    runtime: WorkerRuntime, checkpoint: Path, certificate: Certificate
) -> None:
    """No SR will come for a job that failed for good after classification: its alert no
    longer waits for one, so the sweeper sends it once the receiver is back."""
    receiver = WebhookReceiver(certificate, secret=b"clinical", answers=[503])
    try:
        ctx = notify_context(
            runtime,
            checkpoint,
            task_max_retries=0,
            notifications=[receiver.destination(name="stroke-team", on=ANY_VERDICT)],
        )
        job_id, series_uid = receive_accessioned_series(ctx)
        runtime.reports_dir.write_bytes(b"not a folder")
        assert _run_task(ctx, runtime, job_id, series_uid).failed()
        assert receiver.accepted == [] and len(receiver.requests) == 1  # refused once
        time.sleep(0.2)  # past the back-off
        assert sweep_notifications(ctx.sessions, config=ctx.config) == 1
        (told,) = receiver.accepted
        assert told["event"] in ANY_VERDICT
    finally:
        receiver.stop()


def test_a_heat_map_that_cannot_be_made_loses_neither_the_sr_nor_the_alert(
    runtime: WorkerRuntime, checkpoint: Path, certificate: Certificate, clinical: WebhookReceiver
) -> None:
    ctx = notify_context(
        runtime,
        checkpoint,
        secondary_capture=True,
        notifications=[clinical.destination(name="stroke-team", on=ANY_VERDICT)],
    )
    job_id, series_uid = receive_accessioned_series(ctx)
    inputs = load_inputs(ctx, job_id=job_id, series_instance_uid=series_uid, worker=None)
    assert isinstance(inputs, SeriesInputs)
    sc_uid = generate_uid(entropy_srcs=[inputs.fingerprint, ctx.classifier.sha256, "sc-instance"])
    study = str(inputs.datasets[0].StudyInstanceUID)
    (runtime.reports_dir / study / f"{sc_uid}.dcm").mkdir(parents=True)  # the SC cannot land

    outcome = process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    assert outcome.report_path is not None and outcome.report_path.is_file()
    (told,) = clinical.accepted
    assert told["event"] in ANY_VERDICT
    with ctx.sessions() as session:
        assert db.jobs.get_job(session=session, job_id=job_id).status == JobStatus.DONE


def test_preview_and_e_mail_print_the_probability_as_the_sr_does() -> None:
    """0.4199 under a threshold of 0.42 must not read "0.42 (threshold 0.42)" anywhere: the
    preview, the e-mail and the SR's summary use the same decimals."""
    notice = _notice(
        NotificationEvent.NOT_SUSPECTED, suspected=False, probability=0.4199, threshold=0.42
    )
    sr = summary_text(
        Finding(probability=0.4199, suspected=False, threshold=0.42, top_instance_uids=[])
    )
    assert "probability 0.4199, threshold 0.4200" in sr, sr
    body = email.body(notice, include_patient_name=False)
    assert "Probability: 0.4199 (threshold 0.4200)" in body, body
    line = verdict_line(
        PreviewText(
            headline="AI ICH TRIAGE: NOT SUSPECTED",
            probability=0.4199,
            threshold=0.42,
            model="vit-ich 2.0",
            series="series 2",
        )
    )
    assert line.endswith("p=0.4199 (threshold 0.4200)"), line


def test_a_series_not_classified_is_named_by_its_accession_like_the_verdicts(
    runtime: WorkerRuntime, checkpoint: Path, certificate: Certificate, it_desk: WebhookReceiver
) -> None:
    """The failure's message reads the accession number from a stored instance of the series,
    so its e-mail subject names it as the verdicts' subjects do (not the series UID)."""
    ctx = notify_context(
        runtime, checkpoint, notifications=[it_desk.destination(name="it-desk", on=["failed"])]
    )
    job_id, series_uid = receive_accessioned_series(ctx)
    broken = sorted((runtime.storage_dir / "series").glob("*.dcm"))[-1]
    broken.write_bytes(b"\x00" * 200)
    assert _run_task(ctx, runtime, job_id, series_uid).failed()
    sweep_notifications(ctx.sessions, config=ctx.config, storage_dir=runtime.storage_dir)
    (page,) = it_desk.accepted
    assert page["failure"] == "not_classified" and page["accession_number"] == ACCESSION
    with ctx.sessions() as session:
        (row,) = db.notifications.list_notifications(session=session)
        notice = load_notice(row.payload, row.source_path)
    assert email.subject(notice) == f"AI TRIAGE: SERIES NOT CLASSIFIED - {ACCESSION}"
