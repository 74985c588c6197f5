"""Job leases on SQLite and PostgreSQL: queued and running jobs that are lost are found again."""

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

import db.exports
import db.jobs
import db.leases
import db.receiving
import db.results
from db.enums import ExportKind, ExportStatus, JobStatus, SeriesStatus
from tests.helpers import SEED_TIME, record_head_ct_series, seed_verdict

T0 = SEED_TIME
SERIES = "1.2.826.0.1.3680043.10.2.1"


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


def _job(session: Session) -> int:
    record_head_ct_series(session, series=SERIES, count=3, at=T0, folder="a")
    job = db.jobs.create_job(session=session, series_instance_uid=SERIES, now=T0)
    session.commit()
    return job.id


def _lost(session: Session, seconds: float) -> list[int]:
    return [lost.job_id for lost in db.leases.lost_jobs(session=session, now=_at(seconds))]


def test_a_queued_job_is_lost_once_its_lease_expires_and_waits_longer_each_time(
    session: Session,
) -> None:
    job_id = _job(session)
    assert _lost(session, 0) == []  # pending jobs belong to the outbox, not to the leases
    db.jobs.mark_job_queued(session=session, job_id=job_id, task_id="t1", lease_s=45, now=_at(1))
    session.commit()
    assert _lost(session, 45) == []
    assert _lost(session, 47) == [job_id]

    # Published again at 100 s: it has waited 99 s, so it waits at least as long again.
    job = db.jobs.mark_job_queued(
        session=session, job_id=job_id, task_id="t2", lease_s=45, now=_at(100)
    )
    assert (job.status, job.task_id, job.queued_at) == (JobStatus.QUEUED, "t2", _at(1))
    assert job.lease_expires_at == _at(199)
    session.commit()
    assert _lost(session, 198) == []
    assert _lost(session, 200) == [job_id]


def test_a_running_job_whose_heartbeat_stops_is_lost_and_queued_again(session: Session) -> None:
    job_id = _job(session)
    db.jobs.mark_job_queued(session=session, job_id=job_id, task_id="t1", lease_s=45, now=_at(1))
    assert (
        db.leases.take_lease(
            session=session, job_id=job_id, task_id="t1", lease_s=30, worker="w1", now=_at(2)
        )
        is None
    )
    job = db.jobs.start_job(session=session, job_id=job_id, now=_at(2))
    assert (job.status, job.worker, job.attempts) == (JobStatus.STARTED, "w1", 1)
    session.commit()
    assert db.leases.renew_lease(
        session=session, job_id=job_id, task_id="t1", lease_s=30, now=_at(20)
    )
    session.commit()
    assert _lost(session, 49) == []
    assert _lost(session, 51) == [job_id]  # no heartbeat for 31 s: the worker is gone

    # A stale copy of the message cannot take a job another task holds.
    refusal = db.leases.take_lease(
        session=session, job_id=job_id, task_id="t0", lease_s=30, now=_at(40)
    )
    assert refusal is not None and "held by task t1" in refusal

    # The reconciler publishes it again: queued, with the new task id and a queue lease.
    job = db.jobs.mark_job_queued(
        session=session, job_id=job_id, task_id="t2", lease_s=45, now=_at(60)
    )
    assert (job.status, job.task_id, job.heartbeat_at) == (JobStatus.QUEUED, "t2", None)
    assert job.series.status == SeriesStatus.QUEUED
    session.commit()
    # The lost worker wakes up: its lease is gone.
    assert not db.leases.renew_lease(
        session=session, job_id=job_id, task_id="t1", lease_s=30, now=_at(61)
    )
    assert (
        db.leases.take_lease(session=session, job_id=job_id, task_id="t2", lease_s=30, now=_at(62))
        is None
    )
    assert db.jobs.start_job(session=session, job_id=job_id, now=_at(62)).attempts == 2
    session.commit()


def test_publishing_does_not_take_back_a_job_that_a_worker_holds(session: Session) -> None:
    job_id = _job(session)
    # The worker was faster than the listener's own record of the publication.
    db.leases.take_lease(session=session, job_id=job_id, task_id="t1", lease_s=30, now=_at(1))
    db.jobs.start_job(session=session, job_id=job_id, now=_at(1))
    job = db.jobs.mark_job_queued(
        session=session, job_id=job_id, task_id="t1", lease_s=45, now=_at(2)
    )
    assert (job.status, job.lease_expires_at, job.queued_at) == (JobStatus.STARTED, _at(31), _at(1))
    session.commit()


def test_a_retry_keeps_the_lease_and_a_finished_task_releases_it(session: Session) -> None:
    job_id = _job(session)
    db.leases.take_lease(session=session, job_id=job_id, task_id="t1", lease_s=30, now=_at(1))
    db.leases.release_lease(session=session, job_id=job_id, task_id="t1", hold_s=40, now=_at(5))
    session.commit()
    assert _lost(session, 44) == []
    # The Celery retry keeps its task id, so it takes the job again.
    assert (
        db.leases.take_lease(session=session, job_id=job_id, task_id="t1", lease_s=30, now=_at(30))
        is None
    )
    db.jobs.start_job(session=session, job_id=job_id, now=_at(30))
    db.results.record_result(
        session=session,
        job_id=job_id,
        verdict=seed_verdict(0.3, fingerprint="f", model_name="vit", model_version="1"),
        slice_scores=[(f"{SERIES}.1", 0.3)],
        now=_at(31),
    )
    assert db.jobs.get_job(session=session, job_id=job_id).status == JobStatus.INFERRED
    session.commit()
    # The worker dies after the result but before the task ends: the job is lost too.
    assert _lost(session, 61) == [job_id]
    db.leases.release_lease(session=session, job_id=job_id, task_id="t1", now=_at(40))
    session.commit()
    assert _lost(session, 1000) == []  # the task ended: the export outbox does the rest


def test_a_dead_export_flags_its_job_until_it_is_retried(session: Session) -> None:
    job_id = _job(session)
    db.jobs.start_job(session=session, job_id=job_id, now=_at(1))
    result = db.results.record_result(
        session=session,
        job_id=job_id,
        verdict=seed_verdict(0.9, fingerprint="f", model_name="vit", model_version="1"),
        slice_scores=[(f"{SERIES}.1", 0.9)],
        now=_at(2),
    )
    export, other = (
        db.exports.ensure_export(
            session=session,
            result_id=result.id,
            kind=ExportKind.SR,
            destination=destination,
            sop_instance_uid="2.25.7",
            path="reports/sr.dcm",
        )
        for destination in ("PACS@127.0.0.1:11112", "PACS2@127.0.0.1:11113")
    )
    for attempt in range(2):
        for dead in (export, other):
            db.exports.mark_export_failed(
                session=session,
                export_id=dead.id,
                error="refused",
                max_attempts=2,
                backoff_s=1,
                now=_at(3 + attempt),
            )
    session.commit()
    assert db.exports.get_export(session=session, export_id=export.id).status == ExportStatus.DEAD
    flagged = db.jobs.list_jobs(session=session, status=JobStatus.EXPORT_FAILED)
    assert [job.id for job in flagged] == [job_id]
    assert db.leases.lost_jobs(session=session, now=_at(10_000)) == []
    refusal = db.leases.take_lease(session=session, job_id=job_id, task_id="t9", lease_s=30)
    assert refusal is not None and "retry-export" in refusal

    db.exports.retry_export(session=session, export_id=export.id)
    # The other export is still dead: the job stays among the failures until it is retried.
    assert db.jobs.get_job(session=session, job_id=job_id).status == JobStatus.EXPORT_FAILED
    db.exports.retry_export(session=session, export_id=other.id)
    assert db.jobs.get_job(session=session, job_id=job_id).status == JobStatus.INFERRED
    db.exports.mark_export_sent(session=session, export_id=export.id)
    db.exports.mark_export_sent(session=session, export_id=other.id)
    assert db.jobs.finish_job(session=session, job_id=job_id).status == JobStatus.DONE
    session.commit()


def test_new_instances_supersede_a_job_whose_export_failed(session: Session) -> None:
    job_id = _job(session)
    db.jobs.start_job(session=session, job_id=job_id, now=_at(1))
    db.jobs.mark_inferred(session=session, job_id=job_id, now=_at(2))
    db.jobs.set_export_failed(session=session, job_id=job_id, failed=True, now=_at(3))
    newer = db.jobs.create_job(session=session, series_instance_uid=SERIES, now=_at(4))
    assert newer.id != job_id
    assert db.jobs.get_job(session=session, job_id=job_id).status == JobStatus.SUPERSEDED
    session.commit()
