"""The retention policy: what `stroke-triage purge` deletes, what it keeps, and what it says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

import db.jobs
import db.receiving
from console.retention import purge_storage
from db.engine import create_engine_for, make_session_factory
from db.enums import SeriesStatus
from tests.helpers import migrated_sqlite
from tests.helpers import run_cli as _run

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
STUDY = "1.2.826.0.1.3680043.10.7"


def _series(
    sessions: sessionmaker[Session], storage: Path, number: int, *, at: datetime, finish: bool
) -> tuple[str, list[Path]]:
    """A received series of 3 files; finished (job done) or still waiting for its job."""
    uid = f"{STUDY}.{number}"
    paths = []
    records = []
    for n in range(1, 4):
        path = storage / STUDY / uid / f"{uid}.{n}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
        paths.append(path)
        records.append(
            db.receiving.InstanceRecord(
                sop_instance_uid=f"{uid}.{n}",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                path=str(path.relative_to(storage)),
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                size_bytes=1000,
                received_at=at,
            )
        )
    with sessions() as session:
        db.receiving.record_instances(
            session=session,
            study_instance_uid=STUDY,
            series_instance_uid=uid,
            modality="CT",
            series_description="HEAD",
            calling_ae_title="SCANNER",
            instances=records,
        )
        job = db.jobs.create_job(session=session, series_instance_uid=uid, now=at)
        if finish:
            db.jobs.start_job(session=session, job_id=job.id, now=at)
            db.jobs.finish_job(session=session, job_id=job.id, now=at)
        session.commit()
    return uid, paths


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    engine = create_engine_for(migrated_sqlite(tmp_path / "data" / "stroke-triage.db"))
    return make_session_factory(engine)


def test_purge_deletes_old_finished_series_only(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    storage = tmp_path / "data" / "storage"
    now = T0 + timedelta(days=40)
    old_done, old_files = _series(sessions, storage, 1, at=T0, finish=True)
    _, waiting_files = _series(sessions, storage, 2, at=T0, finish=False)
    _, recent_files = _series(sessions, storage, 3, at=now - timedelta(days=2), finish=True)

    dry = purge_storage(sessions, storage, older_than=timedelta(days=30), dry_run=True, now=now)
    assert (dry.series, dry.files, dry.bytes) == (1, 3, 3000)
    assert all(p.exists() for p in old_files)

    done = purge_storage(sessions, storage, older_than=timedelta(days=30), now=now)
    assert (done.series, done.files, done.bytes, done.missing) == (1, 3, 3000, 0)
    assert not any(p.exists() for p in old_files)
    assert not old_files[0].parent.exists()  # the emptied series folder goes too
    assert all(p.exists() for p in waiting_files + recent_files)
    with sessions() as session:
        series = db.receiving.get_series(session=session, series_instance_uid=old_done)
        assert series.purged_at == now
        assert series.status == SeriesStatus.DONE
        # The record of what was received stays.
        assert (
            len(db.receiving.series_instances(session=session, series_instance_uid=old_done)) == 3
        )
    again = purge_storage(sessions, storage, older_than=timedelta(days=30), now=now)
    assert again.series == 0
    with pytest.raises(ValueError, match="negative"):
        purge_storage(sessions, storage, older_than=timedelta(days=-1))


def test_files_already_gone_are_counted_not_fatal(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    storage = tmp_path / "data" / "storage"
    _, files = _series(sessions, storage, 1, at=T0, finish=True)
    files[0].unlink()
    report = purge_storage(sessions, storage, older_than=timedelta(0), now=T0 + timedelta(1))
    assert (report.series, report.files, report.missing) == (1, 2, 1)


def test_purge_command_reports_counts_and_refuses_a_negative_period(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    _series(sessions, data / "storage", 1, at=T0, finish=True)
    env = {"STROKE_TRIAGE_DATA_DIR": str(data)}
    dry = _run(["purge", "--older-than-days", "30", "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr
    assert "Would delete 3 stored instances (0.0 MB) of 1 finished series" in dry.stdout
    done = _run(["purge", "--older-than-days", "30"], env)
    assert done.returncode == 0, done.stderr
    assert "Deleted 3 stored instances" in done.stdout
    assert not list((data / "storage").rglob("*.dcm"))
    bad = _run(["purge", "--older-than-days", "-1"], env)
    assert bad.returncode == 2
    assert "must not be negative" in bad.stderr
    assert "Traceback" not in bad.stderr
