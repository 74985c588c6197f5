"""Data access on SQLite and PostgreSQL: upserts, state machine, idempotency, outbox, exports."""

import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

import db.exports
import db.jobs
import db.receiving
import db.results
import db.retention
from db.enums import ExportKind, ExportStatus, JobStatus, SeriesStatus
from db.errors import JobStateError, NotFoundError
from db.models import Instance, Job, Result, SliceScore
from db.receiving import InstanceRecord
from tests.helpers import SEED_TIME, instance_records, seed_result, seed_verdict

T0 = SEED_TIME
STUDY = "1.2.826.0.1.3680043.10.1"
SERIES = "1.2.826.0.1.3680043.10.1.1"
MODEL_SHA = "a" * 64


@pytest.fixture
def factory(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Session factory on an emptied database."""
    return sessions


@pytest.fixture
def session(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session:
        yield session


def _records(numbers: range, *, at: datetime = T0, folder: str = "a") -> list[InstanceRecord]:
    return instance_records(SERIES, numbers, at=at, folder=folder, spacing_s=1.0)


def _receive(
    session: Session, records: list[InstanceRecord], series: str = SERIES, study: str = STUDY
) -> int:
    return db.receiving.record_instances(
        session=session,
        study_instance_uid=study,
        series_instance_uid=series,
        modality="CT",
        series_description="HEAD ROUTINE " * 10,
        calling_ae_title="SCANNER1",
        instances=records,
    ).instance_count


def _result(session: Session, job_id: int, fingerprint: str, probability: float = 0.8) -> Result:
    return seed_result(
        session,
        job_id=job_id,
        verdict=seed_verdict(probability, fingerprint=fingerprint, model_sha256=MODEL_SHA),
        slice_scores=[(f"{SERIES}.1", 0.2), (f"{SERIES}.2", 0.9), (f"{SERIES}.3", 0.5)],
        now=T0 + timedelta(minutes=5),
    )


def test_record_instances_is_idempotent(session: Session) -> None:
    assert _receive(session, _records(range(1, 4))) == 3
    resent = _records(range(2, 5), at=T0 + timedelta(minutes=1), folder="b")
    assert _receive(session, resent + resent[:1]) == 4
    session.commit()

    series = db.receiving.get_series(session=session, series_instance_uid=SERIES)
    assert series.status == SeriesStatus.RECEIVING
    assert series.series_description is not None and len(series.series_description) == 64
    assert series.study.study_instance_uid == STUDY
    assert series.first_received_at == T0 + timedelta(seconds=1)
    assert series.last_received_at == T0 + timedelta(minutes=1, seconds=4)
    assert series.last_received_at.tzinfo is not None
    instances = db.receiving.series_instances(session=session, series_instance_uid=SERIES)
    assert [i.path for i in instances] == ["a/1.dcm", "b/2.dcm", "b/3.dcm", "b/4.dcm"]
    assert session.execute(select(func.count(Instance.id))).scalar_one() == 4


def test_concurrent_receivers_do_not_duplicate(factory: sessionmaker[Session]) -> None:
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def receive(numbers: range) -> None:
        try:
            barrier.wait(timeout=10)
            for n in numbers:
                with factory() as session:
                    _receive(session, _records(range(n, n + 2)))
                    session.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=receive, args=(range(1, 20),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with factory() as session:
        assert (
            db.receiving.get_series(session=session, series_instance_uid=SERIES).instance_count
            == 20
        )
        assert session.execute(select(func.count(Instance.id))).scalar_one() == 20


def test_series_state_machine_and_supersede(session: Session) -> None:
    _receive(session, _records(range(1, 4)))
    first = db.jobs.create_job(session=session, series_instance_uid=SERIES, now=T0)
    assert first.status == JobStatus.PENDING
    assert first.instance_count == 3
    statuses = [first.series.status]
    db.jobs.mark_job_queued(session=session, job_id=first.id, task_id="task-1", now=T0)
    statuses.append(first.series.status)
    db.jobs.start_job(session=session, job_id=first.id, now=T0)
    statuses.append(first.series.status)
    assert statuses == [SeriesStatus.COMPLETE, SeriesStatus.QUEUED, SeriesStatus.PROCESSING]
    _result(session, first.id, "f1")
    assert db.jobs.finish_job(session=session, job_id=first.id, now=T0).status == JobStatus.DONE
    session.commit()
    assert (
        db.receiving.get_series(session=session, series_instance_uid=SERIES).status
        == SeriesStatus.DONE
    )

    # Re-sending a known instance changes nothing; a new one reopens the series.
    _receive(session, _records(range(3, 4)))
    assert (
        db.receiving.get_series(session=session, series_instance_uid=SERIES).status
        == SeriesStatus.DONE
    )
    assert _receive(session, _records(range(4, 5))) == 4
    series = db.receiving.get_series(session=session, series_instance_uid=SERIES)
    assert series.status == SeriesStatus.RECEIVING
    assert series.completed_at is None

    second = db.jobs.create_job(session=session, series_instance_uid=SERIES, now=T0)
    third = db.jobs.create_job(session=session, series_instance_uid=SERIES, now=T0)
    session.commit()
    assert db.jobs.get_job(session=session, job_id=first.id).status == JobStatus.DONE
    assert db.jobs.get_job(session=session, job_id=second.id).status == JobStatus.SUPERSEDED
    assert third.instance_count == 4
    with pytest.raises(JobStateError):
        db.jobs.start_job(session=session, job_id=second.id)
    # A superseded job finishing late does not move the series.
    db.jobs.finish_job(session=session, job_id=second.id)
    assert db.receiving.get_series(session=session, series_instance_uid=SERIES).status == (
        SeriesStatus.COMPLETE
    )
    with pytest.raises(NotFoundError):
        db.jobs.get_job(session=session, job_id=999_999)
    with pytest.raises(NotFoundError):
        db.receiving.get_series(session=session, series_instance_uid="9.9.9")


def test_record_result_is_idempotent(session: Session) -> None:
    _receive(session, _records(range(1, 4)))
    job = db.jobs.create_job(session=session, series_instance_uid=SERIES)
    db.jobs.start_job(session=session, job_id=job.id)
    first = _result(session, job.id, "f1")
    session.commit()
    again = _result(session, job.id, "f1", probability=0.1)
    session.commit()

    assert again.id == first.id
    assert again.probability == pytest.approx(0.8)
    assert session.execute(select(func.count(Result.id))).scalar_one() == 1
    assert session.execute(select(func.count(SliceScore.id))).scalar_one() == 3
    ranked = [(s.rank, s.sop_instance_uid) for s in again.slice_scores]
    assert ranked == [(1, f"{SERIES}.2"), (2, f"{SERIES}.3"), (3, f"{SERIES}.1")]
    assert db.jobs.get_job(session=session, job_id=job.id).status == JobStatus.INFERRED


def test_mark_inferred_moves_only_active_jobs(session: Session) -> None:
    _receive(session, _records(range(1, 4)))
    job = db.jobs.create_job(session=session, series_instance_uid=SERIES)
    db.jobs.start_job(session=session, job_id=job.id)
    marked = db.jobs.mark_inferred(session=session, job_id=job.id, now=T0)
    session.commit()
    assert marked.status == JobStatus.INFERRED
    assert marked.inferred_at is not None
    db.jobs.finish_job(session=session, job_id=job.id)
    session.commit()
    assert db.jobs.mark_inferred(session=session, job_id=job.id).status == JobStatus.DONE
    with pytest.raises(NotFoundError):
        db.jobs.mark_inferred(session=session, job_id=999_999)


def test_new_fingerprint_supersedes_older_results(session: Session) -> None:
    _receive(session, _records(range(1, 4)))
    old_job = db.jobs.create_job(session=session, series_instance_uid=SERIES)
    old = _result(session, old_job.id, "f1", probability=0.9)
    db.jobs.finish_job(session=session, job_id=old_job.id)
    _receive(session, _records(range(4, 6)))
    new_job = db.jobs.create_job(session=session, series_instance_uid=SERIES)
    new = _result(session, new_job.id, "f2", probability=0.1)
    session.commit()

    session.refresh(old)
    assert old.superseded is True
    assert new.superseded is False
    rows = db.results.list_results(session=session)
    assert [(r.result_id, r.instance_count, r.suspected) for r in rows] == [(new.id, 5, False)]


def test_export_backoff_until_dead(session: Session) -> None:
    _receive(session, _records(range(1, 4)))
    job = db.jobs.create_job(session=session, series_instance_uid=SERIES)
    result = _result(session, job.id, "f1")
    export = db.exports.ensure_export(
        session=session,
        result_id=result.id,
        kind=ExportKind.SR,
        destination="PACS@127.0.0.1:11112",
        sop_instance_uid="2.25.1",
        path="exports/sr1.dcm",
    )
    same = db.exports.ensure_export(
        session=session,
        result_id=result.id,
        kind=ExportKind.SR,
        destination="PACS@127.0.0.1:11112",
        sop_instance_uid="2.25.2",
        path="exports/sr2.dcm",
    )
    session.commit()
    assert same.id == export.id
    assert same.sop_instance_uid == "2.25.1"
    assert export.status == ExportStatus.PENDING
    assert [e.id for e in db.exports.due_exports(session=session, now=T0)] == [export.id]
    assert db.exports.due_exports(session=session, pending_older_than=T0) == []

    failed = db.exports.mark_export_failed(
        session=session, export_id=export.id, error="refused", max_attempts=3, backoff_s=10, now=T0
    )
    assert (failed.status, failed.attempts) == (ExportStatus.FAILED, 1)
    assert failed.next_attempt_at == T0 + timedelta(seconds=10)
    later = T0 + timedelta(seconds=10)
    failed = db.exports.mark_export_failed(
        session=session,
        export_id=export.id,
        error="refused",
        max_attempts=3,
        backoff_s=10,
        now=later,
    )
    assert failed.next_attempt_at == later + timedelta(seconds=20)
    session.commit()
    assert db.exports.due_exports(session=session, now=later + timedelta(seconds=19)) == []
    due = db.exports.due_exports(session=session, now=later + timedelta(seconds=20))
    assert [e.id for e in due] == [export.id]

    dead = db.exports.mark_export_failed(
        session=session,
        export_id=export.id,
        error="refused",
        max_attempts=3,
        backoff_s=10,
        now=later,
    )
    session.commit()
    assert (dead.status, dead.attempts, dead.next_attempt_at) == (ExportStatus.DEAD, 3, None)
    assert db.exports.due_exports(session=session, now=later + timedelta(days=1)) == []
    assert [e.id for e in db.exports.list_exports(session=session, status=ExportStatus.DEAD)] == [
        export.id
    ]


def test_list_results_newest_first_with_best_export_status(session: Session) -> None:
    rows = []
    for n, series_uid in enumerate(("1.2.3.1", "1.2.3.2", "1.2.3.3")):
        # One study each: a study has one current result (see the test below).
        study = STUDY if n == 2 else f"{STUDY}.{n}"
        _receive(session, _records(range(n * 10, n * 10 + 2)), series=series_uid, study=study)
        job = db.jobs.create_job(session=session, series_instance_uid=series_uid)
        result = db.results.record_result(
            session=session,
            job_id=job.id,
            verdict=seed_verdict(
                0.1 * (n + 1), fingerprint="f", model_sha256=MODEL_SHA, precision="bf16"
            ),
            slice_scores=[],
            now=T0 + timedelta(minutes=n),
        )
        rows.append(result)
    for kind, destination in ((ExportKind.SR, "A@h:1"), (ExportKind.SC, "A@h:1")):
        export = db.exports.ensure_export(
            session=session,
            result_id=rows[0].id,
            kind=kind,
            destination=destination,
            sop_instance_uid=f"2.25.{kind}",
            path="x.dcm",
        )
        if kind == ExportKind.SR:
            db.exports.mark_export_sent(session=session, export_id=export.id)
    db.exports.ensure_export(
        session=session,
        result_id=rows[1].id,
        kind=ExportKind.SR,
        destination="A@h:1",
        sop_instance_uid="2.25.9",
        path="y.dcm",
    )
    session.commit()

    listed = db.results.list_results(session=session)
    assert [r.series_instance_uid for r in listed] == ["1.2.3.3", "1.2.3.2", "1.2.3.1"]
    assert [r.export_status for r in listed] == [None, ExportStatus.PENDING, ExportStatus.SENT]
    assert listed[0].study_instance_uid == STUDY
    assert listed[0].probability == pytest.approx(0.3)
    assert listed[0].job_status == JobStatus.INFERRED
    assert listed[0].created_at == T0 + timedelta(minutes=2)
    assert len(db.results.list_results(session=session, limit=2)) == 2


def test_outbox_pending_jobs(session: Session) -> None:
    jobs = []
    for n, series_uid in enumerate(("1.2.4.1", "1.2.4.2")):
        _receive(session, _records(range(n * 10, n * 10 + 1)), series=series_uid)
        jobs.append(
            db.jobs.create_job(
                session=session, series_instance_uid=series_uid, now=T0 + timedelta(minutes=n)
            )
        )
    session.commit()
    pending = db.jobs.pending_jobs(session=session)
    assert [j.id for j in pending] == [jobs[0].id, jobs[1].id]
    older = db.jobs.pending_jobs(session=session, older_than=T0 + timedelta(seconds=30))
    assert [j.id for j in older] == [jobs[0].id]

    db.jobs.mark_job_queued(session=session, job_id=jobs[0].id, task_id="t-1")
    session.commit()
    assert [j.id for j in db.jobs.pending_jobs(session=session)] == [jobs[1].id]
    assert db.jobs.get_job(session=session, job_id=jobs[0].id).task_id == "t-1"
    listed = db.jobs.list_jobs(session=session, status=JobStatus.QUEUED)
    assert [j.id for j in listed] == [jobs[0].id]


def test_fail_and_requeue(session: Session) -> None:
    _receive(session, _records(range(1, 3)))
    job = db.jobs.create_job(session=session, series_instance_uid=SERIES)
    db.jobs.start_job(session=session, job_id=job.id)
    db.jobs.fail_job(session=session, job_id=job.id, error="OOM", final=False)
    assert (job.status, job.last_error) == (JobStatus.STARTED, "OOM")
    db.jobs.start_job(session=session, job_id=job.id)
    db.jobs.fail_job(session=session, job_id=job.id, error="OOM again", final=True)
    session.commit()
    assert (job.status, job.attempts) == (JobStatus.FAILED, 2)
    assert db.receiving.get_series(session=session, series_instance_uid=SERIES).status == (
        SeriesStatus.FAILED
    )
    with pytest.raises(JobStateError):
        db.jobs.start_job(session=session, job_id=job.id)

    db.jobs.requeue_job(session=session, job_id=job.id)
    session.commit()
    assert (job.status, job.attempts, job.started_at) == (JobStatus.PENDING, 0, None)
    assert [j.id for j in db.jobs.pending_jobs(session=session)] == [job.id]


def test_skip_series_skips_its_jobs(session: Session) -> None:
    _receive(session, _records(range(1, 3)))
    job = db.jobs.create_job(session=session, series_instance_uid=SERIES)
    series = db.receiving.skip_series(
        session=session, series_instance_uid=SERIES, reason="Not a head CT."
    )
    session.commit()
    assert (series.status, series.skip_reason) == (SeriesStatus.SKIPPED, "Not a head CT.")
    assert db.jobs.get_job(session=session, job_id=job.id).status == JobStatus.SKIPPED


def test_stage_timings(session: Session) -> None:
    _receive(session, _records(range(0, 1)))
    job = db.jobs.create_job(
        session=session, series_instance_uid=SERIES, now=T0 + timedelta(seconds=5)
    )
    db.jobs.mark_job_queued(session=session, job_id=job.id, now=T0 + timedelta(seconds=6))
    db.jobs.start_job(session=session, job_id=job.id, now=T0 + timedelta(seconds=8))
    db.results.record_result(
        session=session,
        job_id=job.id,
        verdict=seed_verdict(0.7, fingerprint="f", model_sha256=MODEL_SHA),
        slice_scores=[],
        now=T0 + timedelta(seconds=11),
    )
    session.commit()
    before_export = db.jobs.stage_timings(session=session, job_id=job.id)
    assert before_export["inferred_to_exported"] is None
    assert before_export["total"] is None
    db.jobs.finish_job(session=session, job_id=job.id, now=T0 + timedelta(seconds=15))
    session.commit()
    assert db.jobs.stage_timings(session=session, job_id=job.id) == {
        "received_to_completed": 5.0,
        "completed_to_queued": 1.0,
        "queued_to_started": 2.0,
        "started_to_inferred": 3.0,
        "inferred_to_exported": 4.0,
        "total": 15.0,
    }


def test_datetimes_come_back_as_aware_utc(factory: sessionmaker[Session]) -> None:
    berlin_summer = timezone(timedelta(hours=2))
    local = datetime(2026, 3, 1, 12, 0, tzinfo=berlin_summer)
    with factory() as session:
        _receive(session, _records(range(1, 2), at=local - timedelta(seconds=1)))
        db.jobs.create_job(session=session, series_instance_uid=SERIES, now=local)
        session.commit()
    with factory() as session:
        job = session.execute(select(Job)).scalar_one()
        assert job.completed_at == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
        assert job.completed_at is not None and job.completed_at.tzinfo == UTC
        assert job.received_at == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def test_only_ended_series_past_the_cut_off_are_purged_and_a_resend_revives_them(
    session: Session,
) -> None:
    later = T0 + timedelta(days=30)
    _receive(session, _records(range(1, 4)))
    job = db.jobs.create_job(session=session, series_instance_uid=SERIES)
    db.jobs.start_job(session=session, job_id=job.id)
    session.commit()
    # A series whose job is still running is never purged, however old.
    assert db.retention.purgeable_series(session=session, received_before=later) == []
    _result(session, job.id, "f1")
    db.jobs.finish_job(session=session, job_id=job.id)
    session.commit()
    # Finished, but its last instance arrived after the cut-off: kept.
    assert db.retention.purgeable_series(session=session, received_before=T0) == []
    assert db.retention.purgeable_series(session=session, received_before=later) == [SERIES]

    assert db.retention.claim_series_for_purge(
        session=session, series_instance_uid=SERIES, received_before=later, now=later
    )
    session.commit()
    series = db.receiving.get_series(session=session, series_instance_uid=SERIES)
    assert series.purged_at == later
    assert db.retention.purgeable_series(session=session, received_before=later) == []
    assert not db.retention.claim_series_for_purge(
        session=session, series_instance_uid=SERIES, received_before=later
    )
    session.rollback()

    # The scanner sends the same images again: the series is received (and classified) anew.
    _receive(session, _records(range(1, 4), at=later))
    session.commit()
    series = db.receiving.get_series(session=session, series_instance_uid=SERIES)
    assert series.purged_at is None
    assert series.status == SeriesStatus.RECEIVING


def test_receiving_series_and_instance_paths(session: Session) -> None:
    _receive(session, _records(range(1, 3)))
    _receive(session, _records(range(5, 6), folder="b"), series="1.2.5.1")
    session.commit()
    assert {s.series_instance_uid for s in db.receiving.receiving_series(session=session)} == {
        SERIES,
        "1.2.5.1",
    }
    assert db.receiving.instance_paths(session=session) == {"a/1.dcm", "a/2.dcm", "b/5.dcm"}
    db.jobs.create_job(session=session, series_instance_uid=SERIES)
    session.commit()
    assert [s.series_instance_uid for s in db.receiving.receiving_series(session=session)] == [
        "1.2.5.1"
    ]


def test_count_waiting_jobs_counts_pending_and_queued_only(session: Session) -> None:
    assert db.jobs.count_waiting_jobs(session=session) == 0
    jobs = []
    for n, series_uid in enumerate(("1.2.6.1", "1.2.6.2", "1.2.6.3")):
        _receive(session, _records(range(n * 10, n * 10 + 1)), series=series_uid)
        jobs.append(db.jobs.create_job(session=session, series_instance_uid=series_uid))
    db.jobs.mark_job_queued(session=session, job_id=jobs[1].id, task_id="t")
    db.jobs.start_job(session=session, job_id=jobs[2].id)
    session.commit()
    assert db.jobs.count_waiting_jobs(session=session) == 2


def test_find_result_matches_series_input_and_model(session: Session) -> None:
    _receive(session, _records(range(1, 4)))
    first = db.jobs.create_job(session=session, series_instance_uid=SERIES)
    stored = _result(session, first.id, "f1")
    session.commit()
    # A later job of the same series finds the result of the same input and model.
    second = db.jobs.create_job(session=session, series_instance_uid=SERIES)
    session.commit()
    found = db.results.find_result(
        session=session, job_id=second.id, input_fingerprint="f1", model_sha256=MODEL_SHA
    )
    assert found is not None and found.id == stored.id
    for fingerprint, sha in (("f2", MODEL_SHA), ("f1", "b" * 64)):
        assert (
            db.results.find_result(
                session=session, job_id=second.id, input_fingerprint=fingerprint, model_sha256=sha
            )
            is None
        )
    with pytest.raises(NotFoundError):
        db.results.find_result(
            session=session, job_id=999_999, input_fingerprint="f1", model_sha256=MODEL_SHA
        )


def test_naive_times_are_taken_as_utc(session: Session) -> None:
    _receive(session, _records(range(1, 2)))
    job = db.jobs.create_job(session=session, series_instance_uid=SERIES, now=T0)
    session.commit()
    naive = T0.replace(tzinfo=None)
    assert db.jobs.pending_jobs(session=session, older_than=naive) == []
    later = (T0 + timedelta(seconds=1)).replace(tzinfo=None)
    assert [j.id for j in db.jobs.pending_jobs(session=session, older_than=later)] == [job.id]


def test_a_result_that_does_not_say_what_it_found_is_refused(session: Session) -> None:
    """No finding is assumed: not by the verdict, nor by the row (the "stroke" default of
    migration 0009 is for the rows made before it only)."""
    _receive(session, _records(range(1, 4)))
    job = db.jobs.create_job(session=session, series_instance_uid=SERIES, now=T0)
    verdict = seed_verdict()
    fields = {
        name: value for name, value in dataclasses.asdict(verdict).items() if "finding" not in name
    }
    with pytest.raises(TypeError, match="finding_"):
        db.results.Verdict(**fields)  # type: ignore[call-arg]
    row = Result(
        job_id=job.id,
        series_id=job.series_id,
        **fields,
        shadow=False,
        superseded=False,
        created_at=T0,
    )
    session.add(row)
    with pytest.raises(IntegrityError, match="finding_"):
        session.flush()
    session.rollback()
