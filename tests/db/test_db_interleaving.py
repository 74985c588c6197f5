"""Two sessions interleaving a read-check-write on SQLite and PostgreSQL: no update is lost.

Session A reads a row, decides, and is held just before it writes (its ``before_flush``);
session B runs the competing transition meanwhile in another thread. Where A's read does not
lock the row, B commits in between and A's write overwrites B's (a lost update). With a real
row lock (PostgreSQL ``FOR UPDATE``; on SQLite the write lock taken before the read), B waits
for A's commit and then decides on what A wrote.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, event
from sqlalchemy.orm import Session

import db.jobs
import db.leases
import db.receiving
import db.retention
from db.engine import SessionFactory
from db.enums import JobStatus, SeriesStatus
from tests.helpers import instance_records, record_head_ct_series, seed_job

SERIES = "1.2.826.0.1.3680043.10.7.1"
#: How long A stays held if B does not finish first (B waiting on A's lock is the fixed case).
HOLD_S = 1.5


def _interleave(
    sessions: SessionFactory,
    first: Callable[[Session], object],
    second: Callable[[Session], object],
) -> tuple[object, object, list[str]]:
    """Run ``first`` in session A, held before its write while ``second`` runs in session B.

    Returns both results and the order in which the two committed.
    """
    b_done = threading.Event()
    commits: list[str] = []
    results: dict[str, object] = {}
    errors: list[BaseException] = []

    def hold(_session: Session, _context: object, _instances: object) -> None:
        b_started.set()
        b_done.wait(HOLD_S)  # B either commits now (no lock) or waits for A (locked)

    b_started = threading.Event()

    def run_b() -> None:
        b_started.wait(30)
        try:
            with sessions() as session:
                results["b"] = second(session)
                session.commit()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            b_done.set()

    def note_commit(_connection: Connection) -> None:
        # Just before the database commits (while A still holds its lock): the two threads'
        # own appends after commit() returned could come in either order once A's lock is free.
        commits.append("a" if threading.current_thread() is main else "b")

    main = threading.current_thread()
    thread = threading.Thread(target=run_b)
    with sessions() as session:
        bind = session.get_bind()
        event.listen(bind, "commit", note_commit)
        try:
            thread.start()
            event.listen(session, "before_flush", hold, once=True)
            results["a"] = first(session)
            session.commit()
            thread.join(60)
        finally:
            event.remove(bind, "commit", note_commit)
    assert not errors, errors
    return results["a"], results["b"], commits


def _now(seconds: float = 0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_a_worker_start_is_not_overwritten_by_the_listener_queueing_the_job(
    sessions: SessionFactory,
) -> None:
    with sessions() as session:
        record_head_ct_series(session, series=SERIES, count=3)
        job_id, _ = seed_job(session, series=SERIES)
        session.commit()
    # A: the listener publishes the pending job; B: a worker takes it (published earlier).
    _interleave(
        sessions,
        lambda s: db.jobs.mark_job_queued(session=s, job_id=job_id, task_id="t1", lease_s=45),
        lambda s: db.leases.take_lease(session=s, job_id=job_id, task_id="t0", lease_s=30),
    )
    with sessions() as session:
        job = db.jobs.get_job(session=session, job_id=job_id)
        assert job.status == JobStatus.STARTED, "the worker's start was lost"
        assert job.task_id == "t0"


def test_two_deliveries_of_one_job_never_both_take_its_lease(sessions: SessionFactory) -> None:
    with sessions() as session:
        record_head_ct_series(session, series=SERIES, count=3)
        job_id, _ = seed_job(session, series=SERIES, stage="queued")
        session.commit()
    a, b, commits = _interleave(
        sessions,
        lambda s: db.leases.take_lease(session=s, job_id=job_id, task_id="t1", lease_s=30),
        lambda s: db.leases.take_lease(session=s, job_id=job_id, task_id="t2", lease_s=30),
    )
    assert commits == ["a", "b"]
    assert a is None  # A took the lease ...
    assert isinstance(b, str) and "held by task t1" in b  # ... and B saw A's lease, and dropped
    with sessions() as session:
        assert db.jobs.get_job(session=session, job_id=job_id).task_id == "t1"


def test_a_purge_never_claims_a_series_revived_by_a_new_instance(
    sessions: SessionFactory,
) -> None:
    at = _now(-40 * 86400)
    with sessions() as session:
        record_head_ct_series(session, series=SERIES, count=3, at=at)
        seed_job(session, series=SERIES, stage="done", at=at)
        session.commit()
    cut_off = _now(-30 * 86400)

    def revive(session: Session) -> object:
        return record_head_ct_series(session, series=SERIES, numbers=[4]).status

    claimed, revived, commits = _interleave(
        sessions,
        lambda s: db.retention.claim_series_for_purge(
            session=s, series_instance_uid=SERIES, received_before=cut_off
        ),
        revive,
    )
    assert claimed is True and revived == SeriesStatus.RECEIVING
    assert commits == ["a", "b"]  # the new instance waited for the claim
    with sessions() as session:
        series = db.receiving.get_series(session=session, series_instance_uid=SERIES)
        # The new instance came after the claim: the series lives again, its purge undone, so
        # the completion monitor judges it anew (its files are sent again or already there).
        assert series.purged_at is None and series.status == SeriesStatus.RECEIVING
        assert series.instance_count == 4


def test_a_claim_made_after_a_revival_sees_it(sessions: SessionFactory) -> None:
    """The other order: the instance arrives first; the claim, held, then finds it receiving."""
    at = _now(-40 * 86400)
    with sessions() as session:
        record_head_ct_series(session, series=SERIES, count=3, at=at)
        seed_job(session, series=SERIES, stage="done", at=at)
        session.commit()
    cut_off = _now(-30 * 86400)
    revived, claimed, _ = _interleave(
        sessions,
        lambda s: (
            db.receiving.record_instances(
                session=s,
                study_instance_uid=SERIES.rsplit(".", 1)[0],
                series_instance_uid=SERIES,
                modality="CT",
                series_description="HEAD",
                calling_ae_title="SCANNER",
                instances=instance_records(SERIES, [4]),
            ).status
        ),
        lambda s: db.retention.claim_series_for_purge(
            session=s, series_instance_uid=SERIES, received_before=cut_off
        ),
    )
    assert revived == SeriesStatus.RECEIVING and claimed is False
    with sessions() as session:
        series = db.receiving.get_series(session=session, series_instance_uid=SERIES)
        assert series.purged_at is None
