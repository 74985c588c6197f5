"""The reconciler publishes jobs whose lease expired, and gives up on a job that kills workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom

import db.jobs
import db.leases
from db.enums import JobStatus
from db.rows import Job
from tests.listener.helpers import RunningListener, storescu, wait_until, write_series

Start = Callable[..., RunningListener]


def _job(running: RunningListener) -> Job:
    with running.sessions() as session:
        (job,) = db.jobs.list_jobs(session=session)
        return job


def _queued(running: RunningListener) -> bool:
    with running.sessions() as session:
        jobs = db.jobs.list_jobs(session=session)
    return bool(jobs) and jobs[0].status == JobStatus.QUEUED


def test_lost_jobs_are_published_again_until_they_have_killed_too_many_workers(
    start_listener_for_test: Start, tmp_path: Path
) -> None:
    running = start_listener_for_test(
        quiet_period_s=0.3, reconcile_interval_s=3600.0, queued_lease_s=5.0, job_max_attempts=2
    )
    files = write_series(tmp_path / "s", 4)
    assert storescu(files, running.port).returncode == 0
    uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    wait_until(lambda: _queued(running))
    queued = _job(running)
    assert queued.lease_expires_at is not None and queued.queued_at is not None
    assert queued.lease_expires_at - queued.queued_at >= timedelta(seconds=5)
    monitor = running.listener.monitor

    # Within its lease a queued job is left alone; after it, it is published again.
    assert monitor.reconcile(now=datetime.now(UTC)) == 0
    assert monitor.reconcile(now=datetime.now(UTC) + timedelta(seconds=6)) == 1
    again = _job(running)
    assert again.status == JobStatus.QUEUED
    assert again.task_id != queued.task_id
    assert again.series.series_instance_uid == uid

    # A worker takes it and dies: no heartbeat renews its lease, so it is published again.
    with running.sessions() as session:
        assert (
            db.leases.take_lease(session=session, job_id=again.id, task_id="w1", lease_s=0.5)
            is None
        )
        db.jobs.start_job(session=session, job_id=again.id, worker="killed worker")
        session.commit()
    assert monitor.reconcile() == 0
    time.sleep(0.6)
    assert monitor.reconcile() == 1
    assert (_job(running).status, _job(running).attempts) == (JobStatus.QUEUED, 1)

    # The second worker dies too: with job_max_attempts = 2 the job fails for good.
    with running.sessions() as session:
        db.leases.take_lease(session=session, job_id=again.id, task_id="w2", lease_s=0.5)
        db.jobs.start_job(session=session, job_id=again.id, worker="killed worker")
        session.commit()
    time.sleep(0.6)
    assert monitor.reconcile() == 0
    failed = _job(running)
    assert failed.status == JobStatus.FAILED
    assert "worker was lost 2 times" in (failed.last_error or "")
