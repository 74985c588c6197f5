"""Two workers share the real Redis and PostgreSQL; a failed job is re-queued from the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless
from sqlalchemy.orm import Session, sessionmaker

import db.jobs
import db.results
from db.engine import create_engine_for, make_session_factory
from db.enums import JobStatus
from db.models import Job
from dicom_edge.peers import send_files
from model.phantom import write_phantom_series
from tests.e2e.helpers import PacsStub, Service, storescu

pytestmark = pytest.mark.slow


def _wait_for_log(service: Service, text: str, count: int, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = sum(text in log.read_text(errors="replace") for _, log in service.processes)
        if found >= count:
            return
        time.sleep(0.3)
    raise AssertionError(f"{count} processes never logged {text!r}:\n{service.logs()}")


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "stroke_triage", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_two_workers_share_redis_and_postgres(
    postgres_schema_url: str,  # first: dropped after the services have stopped
    service: Service,
    test_pacs: PacsStub,
    redis_url: str,
    tmp_path: Path,
) -> None:
    service.env["STROKE_TRIAGE_DATABASE_URL"] = postgres_schema_url
    service.env["STROKE_TRIAGE_BROKER_URL"] = redis_url
    service.env["STROKE_TRIAGE_WORKER__TASK_MAX_RETRIES"] = "0"
    port = int(service.env["STROKE_TRIAGE_LISTENER__PORT"])
    service.start("listen")
    service.start("work")
    service.start("work")
    service.wait_listening(port)
    _wait_for_log(service, "Export sweeper started", 2)

    # Four studies: a study has one report (issue 26), and each worker must get some.
    series = [
        write_phantom_series(tmp_path / f"s{i}", n_slices=8, size=96, seed=i) for i in range(4)
    ]
    storescu([path for files in series for path in files], port)
    try:
        reports = test_pacs.wait_for(4, timeout_s=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{service.logs()}") from exc

    engine = create_engine_for(postgres_schema_url)
    sessions = make_session_factory(engine)
    try:
        # The PACS holds the SR a moment before the worker commits the job as done.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sessions() as session:
                jobs = db.jobs.list_jobs(session=session)
            if len(jobs) == 4 and {job.status for job in jobs} == {JobStatus.DONE}:
                break
            time.sleep(0.2)
        with sessions() as session:
            jobs = db.jobs.list_jobs(session=session)
            assert len(jobs) == 4
            assert {job.status for job in jobs} == {JobStatus.DONE}
            assert all(job.attempts == 1 for job in jobs)
            workers = {job.worker for job in jobs}
            assert len(workers) == 2, workers
            assert len(db.results.list_results(session=session)) == 4
            for job in jobs:
                timings = db.jobs.stage_timings(session=session, job_id=job.id)
                assert None not in timings.values(), timings
        assert len({pydicom.dcmread(p).SOPInstanceUID for p in reports}) == 4

        # A real dead letter: a series whose pixel data the worker cannot decode fails for
        # good; the admin sees it with its error and re-queues it, and it really runs again.
        broken = _undecodable_series(tmp_path / "broken")
        assert send_files(
            broken, host="127.0.0.1", port=port, called_ae_title="STROKETRIAGE"
        ) == len(broken)
        broken_uid = str(pydicom.dcmread(broken[0], stop_before_pixels=True).SeriesInstanceUID)
        job = _wait_for_job(sessions, broken_uid, JobStatus.FAILED, service)
        first_start = job.started_at
        failed = _cli(service.env, "jobs", "--status", "failed")
        # Its code and our words (the decoder's own text goes to the worker's log only).
        assert broken_uid in failed and "preprocess_failed" in failed, failed
        assert f"Job {job.id} queued again" in _cli(service.env, "requeue", str(job.id))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with sessions() as session:
                again = db.jobs.get_job(session=session, job_id=job.id)
            if again.status == JobStatus.FAILED and again.started_at != first_start:
                break
            time.sleep(0.3)
        assert again.status == JobStatus.FAILED, service.logs()
        assert again.started_at != first_start, "the re-queued job never ran again"
        assert len(list(test_pacs.folder.glob("*.dcm"))) == 4  # no report for a failed job
    finally:
        engine.dispose()
    assert shutil.which("storescu")


def _undecodable_series(folder: Path) -> list[Path]:
    """Phantom slices (a study of their own) stored as RLE whose compressed stream is garbage
    (but well framed)."""
    files = write_phantom_series(folder, n_slices=6, size=64, seed=9)
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.compress(RLELossless)
        dataset.PixelData = encapsulate([b"\x02\x00\x00\x00" + b"\x00" * 60 + b"\x01" * 36])
        dataset.save_as(path, enforce_file_format=True)
    return files


def _wait_for_job(
    sessions: sessionmaker[Session], series_uid: str, status: JobStatus, service: Service
) -> Job:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with sessions() as session:
            jobs = [
                job
                for job in db.jobs.list_jobs(session=session)
                if job.series.series_instance_uid == series_uid
            ]
        if jobs and jobs[0].status == status:
            return jobs[0]
        time.sleep(0.3)
    raise AssertionError(f"no {status} job for series {series_uid}:\n{service.logs()}")
