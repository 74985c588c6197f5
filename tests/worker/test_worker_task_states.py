"""The Celery task drops a job whose state says it must not run: no retry, no failure recorded.

Two paths lead there: a job already final when the task starts (superseded, skipped, failed: a
duplicate or late delivery) is answered with ``skipped`` = its state; a job superseded *while*
the worker classifies it makes the database refuse the result (``JobStateError``), which the task
turns into a drop as well.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from celery import Celery
from sqlalchemy import event
from sqlalchemy.engine import Engine

import db.engine
import db.jobs
import db.receiving
from db.enums import JobStatus
from model.phantom import write_phantom_series
from tests.helpers import record_head_ct_series
from worker.celery_app import create_celery_app
from worker.config import WorkerConfig, WorkerRuntime

#: The task's registered name (the listener sends it by this name; a test checks both agree).
TASK_NAME = "stroke_triage.process_series"
STUDY = "1.2.826.0.1.3680043.10.99"
SERIES = f"{STUDY}.1"


@pytest.fixture
def app(runtime: WorkerRuntime, checkpoint: Path) -> Celery:
    # Retries would be fast and run in-process: a wrong retry shows as extra tries or a failure.
    config = WorkerConfig(checkpoint=checkpoint, task_max_retries=2, task_retry_backoff_s=0.01)
    celery = create_celery_app(config, runtime)
    celery.conf.task_always_eager = True
    return celery


@pytest.fixture
def sessions(runtime: WorkerRuntime) -> Any:
    engine = db.engine.create_engine_for(runtime.database_url)
    yield db.engine.make_session_factory(engine)
    engine.dispose()


def _new_job(sessions: Any) -> int:
    """Record a 3-instance series (as the listener does) and create its job (complete)."""
    with sessions() as session:
        record_head_ct_series(session, study=STUDY, series=SERIES, count=3)
        job_id = db.jobs.create_job(session=session, series_instance_uid=SERIES).id
        session.commit()
    return int(job_id)


def _job(sessions: Any, job_id: int) -> tuple[JobStatus, int, str | None]:
    with sessions() as session:
        job = db.jobs.get_job(session=session, job_id=job_id)
        return job.status, job.attempts, job.last_error


def _run_task(app: Celery, job_id: int) -> Any:
    return app.tasks[TASK_NAME].apply(kwargs={"job_id": job_id, "series_instance_uid": SERIES})


def _assert_dropped(outcome: Any, job_id: int, state: str) -> None:
    """The task succeeded without a result: no retry (it would have failed) and no failure."""
    assert outcome.successful(), outcome.traceback
    assert outcome.result["job_id"] == job_id
    assert state in outcome.result["skipped"]
    assert outcome.result.get("result_id") is None


def test_superseded_job_is_dropped_and_the_newer_job_is_untouched(
    app: Celery, sessions: Any
) -> None:
    old = _new_job(sessions)
    new = _new_job(sessions)  # a late instance completed the series again
    assert _job(sessions, old)[0] == JobStatus.SUPERSEDED

    outcome = _run_task(app, old)

    _assert_dropped(outcome, old, "superseded")
    assert _job(sessions, old) == (JobStatus.SUPERSEDED, 0, None)
    assert _job(sessions, new) == (JobStatus.PENDING, 0, None)


def test_job_of_a_skipped_series_is_dropped(app: Celery, sessions: Any) -> None:
    job_id = _new_job(sessions)
    with sessions() as session:
        db.receiving.skip_series(
            session=session, series_instance_uid=SERIES, reason="Not a head CT."
        )
        session.commit()

    outcome = _run_task(app, job_id)

    _assert_dropped(outcome, job_id, "skipped")
    assert _job(sessions, job_id) == (JobStatus.SKIPPED, 0, "Not a head CT.")


def test_failed_job_delivered_again_keeps_its_failure(app: Celery, sessions: Any) -> None:
    job_id = _new_job(sessions)
    with sessions() as session:
        db.jobs.fail_job(session=session, job_id=job_id, error="RuntimeError: first", final=True)
        session.commit()
    before = _job(sessions, job_id)

    outcome = _run_task(app, job_id)

    _assert_dropped(outcome, job_id, "failed")
    assert _job(sessions, job_id) == before == (JobStatus.FAILED, before[1], "RuntimeError: first")


def test_unknown_job_is_a_failure_not_a_drop(app: Celery, sessions: Any) -> None:
    """Contrast: a job that does not exist is an error (NotFoundError), not a state to drop."""
    _new_job(sessions)
    outcome = _run_task(app, 999_999)
    assert outcome.failed()


def test_job_superseded_during_inference_is_dropped_on_job_state_error(
    app: Celery, sessions: Any, runtime: WorkerRuntime
) -> None:
    """A late instance supersedes the job while the worker classifies: the result is refused."""
    folder = runtime.storage_dir / STUDY / SERIES
    paths = write_phantom_series(folder, n_slices=3, size=64)
    now = datetime.now(UTC)
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
    series_uid = str(headers[0].SeriesInstanceUID)
    with sessions() as session:
        db.receiving.record_instances(
            session=session,
            study_instance_uid=str(headers[0].StudyInstanceUID),
            series_instance_uid=series_uid,
            modality="CT",
            series_description="HEAD",
            calling_ae_title="SCANNER",
            instances=[
                db.receiving.InstanceRecord(
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    path=str(path.relative_to(runtime.storage_dir)),
                    transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                    size_bytes=path.stat().st_size,
                    received_at=now,
                )
                for path, ds in zip(paths, headers, strict=True)
            ],
        )
        job_id = int(db.jobs.create_job(session=session, series_instance_uid=series_uid).id)
        session.commit()

    superseded: list[int] = []

    def supersede_once(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # The first statement about results runs after the job started and the series was read
        # (inference is next): this is when a late instance arrives in real life.
        if superseded or "results" not in statement.lower() or not conn.engine.url.database:
            return
        superseded.append(1)
        other = db.engine.create_engine_for(runtime.database_url)
        with db.engine.make_session_factory(other)() as session:
            superseded.append(
                int(db.jobs.create_job(session=session, series_instance_uid=series_uid).id)
            )
            session.commit()
        other.dispose()

    event.listen(Engine, "before_cursor_execute", supersede_once)
    try:
        outcome = app.tasks[TASK_NAME].apply(
            kwargs={"job_id": job_id, "series_instance_uid": series_uid}
        )
    finally:
        event.remove(Engine, "before_cursor_execute", supersede_once)

    assert len(superseded) == 2, "the hook never ran: the task took another path"
    assert outcome.successful(), outcome.traceback
    assert outcome.result == {"job_id": job_id, "skipped": outcome.result["skipped"]}
    assert f"Job {job_id}" in outcome.result["skipped"]
    status, attempts, error = _job(sessions, job_id)
    assert (status, attempts, error) == (JobStatus.SUPERSEDED, 1, None)
    assert _job(sessions, superseded[1])[0] == JobStatus.PENDING
