"""The pipeline and the outbox, in process: SQLite, a tiny ViT, real Storage SCPs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pydicom
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

import db.exports
import db.jobs
import db.results
from console.retention import purge_storage
from db.enums import ExportKind, ExportStatus, JobStatus
from db.models import Result, SliceScore
from dicom_edge import PROCESS_SERIES_TASK, PacsDestination
from tests.helpers import dciodvfy_errors, free_port, require_tool
from tests.worker.helpers import Pacs, receive_late, receive_series, worker_context
from worker.celery_app import create_celery_app
from worker.config import WorkerConfig, WorkerRuntime
from worker.context import WorkerContext
from worker.inputs import SeriesMismatchError, SeriesUnreadableError
from worker.outbox import sweep
from worker.pipeline import process_series


@pytest.fixture
def pacs() -> Iterator[Pacs]:
    server = Pacs()
    yield server
    server.stop()


def _count(ctx: WorkerContext, model: type[Any]) -> int:
    with ctx.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_same_task_three_times_gives_one_result_and_one_report(
    runtime: WorkerRuntime, checkpoint: Path, pacs: Pacs
) -> None:
    ctx = worker_context(runtime, checkpoint, pacs=[pacs.destination])
    job_id, series_uid = receive_series(ctx)
    outcomes = [
        process_series(ctx, job_id=job_id, series_instance_uid=series_uid, worker="w1")
        for _ in range(3)
    ]
    assert outcomes[0].skipped is None and outcomes[0].result_id is not None
    assert [o.skipped for o in outcomes[1:]] == ["done", "done"]
    assert _count(ctx, Result) == 1
    assert _count(ctx, SliceScore) == 6
    assert len(pacs.uids("SR")) == 1
    with ctx.sessions() as session:
        job = db.jobs.get_job(session=session, job_id=job_id)
        assert job.status == JobStatus.DONE and job.worker == "w1"
        timings = db.jobs.stage_timings(session=session, job_id=job_id)
        assert all(value is not None and value >= 0 for value in timings.values()), timings
        result = db.results.get_result(session=session, job_id=job_id)
        assert result is not None and len(result.model_sha256) == 64


def test_a_late_instance_gives_a_report_that_names_the_one_it_replaces(
    runtime: WorkerRuntime, checkpoint: Path, pacs: Pacs
) -> None:
    ctx = worker_context(runtime, checkpoint, pacs=[pacs.destination])
    first_job, series_uid = receive_series(ctx, hold_back=1)
    first = process_series(ctx, job_id=first_job, series_instance_uid=series_uid, worker="w1")
    second_job, _ = receive_late(ctx)
    second = process_series(ctx, job_id=second_job, series_instance_uid=series_uid, worker="w1")

    reports = [ds for ds in pacs.received if ds.Modality == "SR"]
    assert len(reports) == 2
    old, new = reports
    assert "PredecessorDocumentsSequence" not in old
    (study,) = new.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == old.StudyInstanceUID
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == old.SeriesInstanceUID
    (instance,) = series.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == old.SOPInstanceUID
    assert (
        len(
            new.CurrentRequestedProcedureEvidenceSequence[0]
            .ReferencedSeriesSequence[0]
            .ReferencedSOPSequence
        )
        == 6
    )
    with ctx.sessions() as session:
        assert db.jobs.get_job(session=session, job_id=second_job).status == JobStatus.DONE
        superseded = session.get(Result, first.result_id)
        assert superseded is not None and superseded.superseded
    # The file written for the PACS is the one checked by DICOM's own validator.
    assert second.report_path is not None
    assert dciodvfy_errors(second.report_path) == []


def test_rerun_after_failed_export_reuses_result_and_sweeper_sends_once(
    runtime: WorkerRuntime, checkpoint: Path
) -> None:
    port = free_port()
    down = PacsDestination(ae_title="LATEPACS", host="127.0.0.1", port=port)
    ctx = worker_context(runtime, checkpoint, pacs=[down], export_backoff_s=0.05)
    job_id, series_uid = receive_series(ctx)
    for _ in range(2):  # PACS down: the result is stored once, the export waits in the outbox
        outcome = process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
        assert outcome.skipped is None
        time.sleep(0.2)
    assert _count(ctx, Result) == 1
    with ctx.sessions() as session:
        assert db.jobs.get_job(session=session, job_id=job_id).status == JobStatus.INFERRED
        (export,) = db.exports.list_exports(session=session)
        assert export.status == ExportStatus.FAILED and export.attempts == 2
        assert export.last_error and "No association" in export.last_error
    late = Pacs(port=port, ae_title="LATEPACS")
    try:
        time.sleep(0.2)
        assert sweep(ctx.sessions, config=ctx.config) == 1
        assert sweep(ctx.sessions, config=ctx.config) == 0
        assert len(late.uids("SR")) == 1
    finally:
        late.stop()
    with ctx.sessions() as session:
        job = db.jobs.get_job(session=session, job_id=job_id)
        assert job.status == JobStatus.DONE and job.exported_at is not None
        (export,) = db.exports.list_exports(session=session)
        assert export.status == ExportStatus.SENT and export.attempts == 3


def test_export_becomes_dead_letter_and_can_be_retried(
    runtime: WorkerRuntime, checkpoint: Path
) -> None:
    down = PacsDestination(ae_title="DOWN", host="127.0.0.1", port=free_port())
    ctx = worker_context(
        runtime, checkpoint, pacs=[down], export_backoff_s=0.01, export_max_attempts=2
    )
    job_id, series_uid = receive_series(ctx, n_slices=3)
    process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    time.sleep(0.05)
    sweep(ctx.sessions, config=ctx.config)
    with ctx.sessions() as session:
        (dead,) = db.exports.list_exports(session=session, status=ExportStatus.DEAD)
        assert dead.attempts == 2
        assert db.exports.due_exports(session=session) == []
        db.exports.retry_export(session=session, export_id=dead.id)
        session.commit()
        assert [e.id for e in db.exports.due_exports(session=session)] == [dead.id]


def test_secondary_capture_and_two_destinations(
    runtime: WorkerRuntime, checkpoint: Path, pacs: Pacs
) -> None:
    second = Pacs(ae_title="SECOND")
    try:
        ctx = worker_context(
            runtime, checkpoint, pacs=[pacs.destination, second.destination], secondary_capture=True
        )
        job_id, series_uid = receive_series(ctx)
        process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
        for server in (pacs, second):
            assert len(server.uids("SR")) == 1
            assert len(server.uids("OT")) == 1
        capture = next(ds for ds in pacs.received if ds.Modality == "OT")
        assert capture.StudyInstanceUID == pacs.received[0].StudyInstanceUID
        assert capture.BurnedInAnnotation == "YES"
    finally:
        second.stop()
    with ctx.sessions() as session:
        kinds = sorted(e.kind for e in db.exports.list_exports(session=session))
        assert kinds == [ExportKind.SC, ExportKind.SC, ExportKind.SR, ExportKind.SR]
        assert db.jobs.get_job(session=session, job_id=job_id).status == JobStatus.DONE
    dciodvfy = require_tool("dciodvfy", "dicom3tools")
    (path,) = (runtime.reports_dir).glob(f"*/{capture.SOPInstanceUID}.dcm")
    checked = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
    errors = [line for line in checked.stderr.splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


def test_task_dead_letter_after_last_retry_and_requeue(
    runtime: WorkerRuntime, checkpoint: Path
) -> None:
    config = WorkerConfig(checkpoint=checkpoint, task_max_retries=2, task_retry_backoff_s=0.01)
    app = create_celery_app(config, runtime)
    app.conf.task_always_eager = True
    ctx = worker_context(runtime, checkpoint)
    job_id, series_uid = receive_series(ctx, n_slices=3)
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        raise OperationalError("SELECT 1", {}, Exception("database went away"))

    with mock.patch("worker.tasks.process_series", flaky):
        outcome = app.tasks[PROCESS_SERIES_TASK].apply(
            kwargs={"job_id": job_id, "series_instance_uid": series_uid}
        )
    assert outcome.failed()
    assert len(calls) == 3  # the first try and two retries
    with ctx.sessions() as session:
        job = db.jobs.get_job(session=session, job_id=job_id)
        assert job.status == JobStatus.FAILED
        # Our code and words: the driver's own text goes to the log only.
        assert job.last_error == "database_unavailable: The database did not answer."
        assert [j.id for j in db.jobs.list_jobs(session=session, status=JobStatus.FAILED)] == [
            job_id
        ]
        db.jobs.requeue_job(session=session, job_id=job_id)
        session.commit()
    done = app.tasks[PROCESS_SERIES_TASK].apply(
        kwargs={"job_id": job_id, "series_instance_uid": series_uid}
    )
    assert done.successful() and done.result["result_id"] is not None
    with ctx.sessions() as session:
        assert db.jobs.get_job(session=session, job_id=job_id).status == JobStatus.DONE


def test_a_job_for_a_purged_series_fails_with_the_reason(
    runtime: WorkerRuntime, checkpoint: Path, pacs: Pacs
) -> None:
    ctx = worker_context(runtime, checkpoint, pacs=[pacs.destination])
    job_id, series_uid = receive_series(ctx)
    process_series(ctx, job_id=job_id, series_instance_uid=series_uid, worker="w1")
    report = purge_storage(
        ctx.sessions, runtime.storage_dir, older_than=timedelta(0), now=datetime.now(UTC)
    )
    assert report.files == 6
    with ctx.sessions() as session:
        job = db.jobs.create_job(session=session, series_instance_uid=series_uid)
        session.commit()
        stale_job = job.id
    with pytest.raises(SeriesUnreadableError, match="retention policy"):
        process_series(ctx, job_id=stale_job, series_instance_uid=series_uid, worker="w1")


def test_a_task_naming_another_series_than_its_job_is_refused(
    runtime: WorkerRuntime, checkpoint: Path
) -> None:
    ctx = worker_context(runtime, checkpoint)
    job_id, series_uid = receive_series(ctx, n_slices=3)
    with pytest.raises(
        SeriesMismatchError, match=rf"is for series {series_uid}.*names series 1\.2\.3"
    ):
        process_series(ctx, job_id=job_id, series_instance_uid="1.2.3")
    with ctx.sessions() as session:
        job = db.jobs.get_job(session=session, job_id=job_id)
        assert job.status == JobStatus.QUEUED and job.attempts == 0
    assert _count(ctx, Result) == 0


def test_reports_are_written_durably(runtime: WorkerRuntime, checkpoint: Path) -> None:
    ctx = worker_context(runtime, checkpoint, secondary_capture=True)
    job_id, series_uid = receive_series(ctx, n_slices=3)
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    _ = ctx.accession_key  # the site key is made (and fsynced) once, before: not counted here
    with mock.patch("dicom_edge.durable.os.fsync", counting_fsync):
        outcome = process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    assert outcome.report_path is not None
    assert outcome.report_path.parent.parent == runtime.reports_dir
    written = sorted(path.name for path in runtime.reports_dir.rglob("*") if path.is_file())
    # The SR and the SC, and the alert's preview beside them.
    assert [name.rsplit(".", 1)[1] for name in written].count("dcm") == 2, written
    assert [name.rsplit(".", 1)[1] for name in written].count("jpg") == 1, written
    # Each file, then its folder; and the parent of each folder made (reports/, reports/<study>/).
    assert len(synced) == 6 + 2
    assert pydicom.dcmread(outcome.report_path).Modality == "SR"


@pytest.mark.parametrize("damage", ["changed", "truncated"])
def test_a_report_changed_since_it_was_written_is_not_sent(
    runtime: WorkerRuntime, checkpoint: Path, damage: str
) -> None:
    """The export records the file's sha256 and size as written; a file that no longer has
    them is not sent (a coded failure), though it is still readable DICOM of the right UID."""
    port = free_port()
    down = PacsDestination(ae_title="LATEPACS", host="127.0.0.1", port=port)
    ctx = worker_context(runtime, checkpoint, pacs=[down], export_backoff_s=0.01)
    job_id, series_uid = receive_series(ctx, n_slices=3)
    outcome = process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    path = outcome.report_path
    assert path is not None
    written = path.read_bytes()
    with ctx.sessions() as session:
        (export,) = db.exports.list_exports(session=session)
        assert export.size_bytes == len(written)
        assert export.sha256 == hashlib.sha256(written).hexdigest()
    if damage == "changed":  # still the same object, readable, same size class: not ours
        report = pydicom.dcmread(path)
        report.ContentDate = "19990101"
        report.save_as(path, enforce_file_format=True)
    else:
        path.write_bytes(written[:-64])
    late = Pacs(port=port, ae_title="LATEPACS")
    try:
        time.sleep(0.05)
        assert sweep(ctx.sessions, config=ctx.config) == 0
        assert late.uids("SR") == []
    finally:
        late.stop()
    with ctx.sessions() as session:
        (export,) = db.exports.list_exports(session=session)
    assert export.status == ExportStatus.FAILED
    assert export.last_error is not None and export.last_error.startswith("file_changed: ")


def test_a_reused_result_keeps_its_own_provenance_in_the_sr(
    runtime: WorkerRuntime, checkpoint: Path, tmp_path: Path
) -> None:
    """Same weights, a new spec (renamed, recalibrated): a requeued job reuses its stored
    result, and the SR it writes names the model that made that result, not the one loaded."""
    first = tmp_path / "ckpt"
    shutil.copytree(checkpoint, first)
    ctx = worker_context(runtime, first)
    job_id, series_uid = receive_series(ctx, n_slices=3)
    outcome = process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    assert outcome.report_path is not None
    before = pydicom.dcmread(outcome.report_path)
    spec_path = first / "spec.json"
    spec = json.loads(spec_path.read_text())
    spec.update(name="renamed-model", version="9.9-recalibrated", threshold=0.123)
    spec_path.write_text(json.dumps(spec))
    with ctx.sessions() as session:
        db.jobs.requeue_job(session=session, job_id=job_id)
        session.commit()

    again = worker_context(runtime, first)
    assert again.classifier.spec.version == "9.9-recalibrated"
    rerun = process_series(again, job_id=job_id, series_instance_uid=series_uid)
    assert rerun.result_id == outcome.result_id and rerun.report_path == outcome.report_path
    after = pydicom.dcmread(outcome.report_path)
    text, earlier = str(after), str(before)  # compared as booleans: short failure messages
    assert ("9.9-recalibrated" in text, "renamed-model" in text) == (False, False)
    assert ("random-untrained" in text, "stroke-triage-vit" in text) == (True, True)
    assert text.count("random-untrained") == earlier.count("random-untrained")
