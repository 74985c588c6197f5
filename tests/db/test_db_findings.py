"""A multi-output model's further findings, stored with the result, on SQLite and PostgreSQL."""

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

import db.jobs
import db.overview
import db.receiving
import db.results
from console.records import result_record, to_csv
from db.findings import FindingScore
from db.models import Result, ResultFinding
from tests.helpers import SEED_TIME, instance_records, seed_verdict

STUDY = "1.2.826.0.1.3680043.10.9"
SERIES = "1.2.826.0.1.3680043.10.9.1"
EDH = FindingScore("SCT", "262300005", "Epidural hemorrhage", "EDH", 0.25)
SDH = FindingScore("SCT", "35486000", "Subdural hemorrhage", "SDH", 0.75)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session:
        yield session


def _job(session: Session) -> int:
    db.receiving.record_instances(
        session=session,
        study_instance_uid=STUDY,
        series_instance_uid=SERIES,
        modality="CT",
        series_description="HEAD",
        calling_ae_title="SCANNER1",
        instances=instance_records(SERIES, range(1, 3), at=SEED_TIME),
    )
    job = db.jobs.create_job(session=session, series_instance_uid=SERIES)
    db.jobs.start_job(session=session, job_id=job.id)
    return job.id


def _record(session: Session, job_id: int, findings: list[FindingScore]) -> Result:
    return db.results.record_result(
        session=session,
        job_id=job_id,
        verdict=seed_verdict(0.6, fingerprint="f1"),
        slice_scores=[(f"{SERIES}.1", 0.6), (f"{SERIES}.2", 0.1)],
        further_findings=findings,
    )


def test_further_findings_are_stored_once_in_order_and_shown(session: Session) -> None:
    job_id = _job(session)
    result = _record(session, job_id, [SDH, EDH])
    session.commit()
    again = _record(session, job_id, [EDH])  # a retry: the stored result, unchanged
    session.commit()
    assert again.id == result.id
    assert session.scalar(select(func.count(ResultFinding.id))) == 2
    session.expire_all()
    stored = db.results.get_result(session=session, job_id=job_id)
    assert stored is not None
    assert [(f.position, f.finding_name, f.probability) for f in stored.further_findings] == [
        (1, "SDH", pytest.approx(0.75)),
        (2, "EDH", pytest.approx(0.25)),
    ]
    detail = db.overview.series_detail(session=session, series_instance_uid=SERIES)
    assert [f.finding_meaning for f in detail.row.further_findings] == [
        "Subdural hemorrhage",
        "Epidural hemorrhage",
    ]
    # The series list and the results (API, `stroke-triage results`, its CSV) carry them too.
    (row,) = db.overview.list_series(session=session)
    assert row.further_findings == (SDH, EDH)
    record = result_record(row)
    assert record.further_findings == "SDH 0.7500; EDH 0.2500"
    header, line = to_csv([record]).splitlines()
    assert "further_findings" in header.split(",")
    assert "SDH 0.7500; EDH 0.2500" in line


def test_a_single_finding_result_has_none(session: Session) -> None:
    job_id = _job(session)
    _record(session, job_id, [])
    session.commit()
    detail = db.overview.series_detail(session=session, series_instance_uid=SERIES)
    assert detail.row.further_findings == ()
    (row,) = db.overview.list_series(session=session)
    assert row.further_findings == () and result_record(row).further_findings == ""


def test_one_finding_is_stored_once_per_result(session: Session) -> None:
    job_id = _job(session)
    with pytest.raises(IntegrityError):
        _record(session, job_id, [EDH, EDH])
