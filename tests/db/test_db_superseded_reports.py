"""db.exports.superseded_report_paths on SQLite and PostgreSQL: one query, same answers, and
the earlier reports of the whole study (one report per study), never another study's."""

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

import db.exports
import db.jobs
import db.receiving
import db.results
from db.engine import make_session_factory
from db.enums import ExportKind
from db.errors import NotFoundError
from tests.helpers import SEED_TIME, record_head_ct_series, seed_result, seed_verdict

T0 = SEED_TIME
STUDY = "1.2.826.0.1.3680043.10.2"
SERIES = "1.2.826.0.1.3680043.10.2.1"
OTHER_SERIES = "1.2.826.0.1.3680043.10.2.2"
OTHER_STUDY = "1.2.826.0.1.3680043.10.3"


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with make_session_factory(engine)() as session:
        yield session
        session.rollback()


def _job_and_result(session: Session, series: str, number: int, study: str = STUDY) -> int:
    """Receive one more instance of ``series``, and record a job and its result; the result id."""
    record_head_ct_series(
        session,
        series=series,
        study=study,
        numbers=[number],
        at=T0,
        spacing_s=1.0,
        calling_ae_title="SCANNER1",
        folder="a",
    )
    job = db.jobs.create_job(session=session, series_instance_uid=series)
    result = seed_result(
        session,
        job_id=job.id,
        verdict=seed_verdict(0.8, fingerprint=f"f{number}"),
        slice_scores=[(f"{series}.{number}", 0.8)],
        now=T0 + timedelta(minutes=number),
    )
    db.jobs.finish_job(session=session, job_id=job.id)
    return result.id


def _export(session: Session, result_id: int, kind: ExportKind, destination: str) -> None:
    db.exports.ensure_export(
        session=session,
        result_id=result_id,
        kind=kind,
        destination=destination,
        sop_instance_uid=f"2.25.{result_id}{len(kind.value)}",
        path=f"outbox/{result_id}-{kind.value}.dcm",
    )


def test_superseded_report_paths_in_one_query(engine: Engine, session: Session) -> None:
    first = _job_and_result(session, SERIES, 1)
    assert db.exports.superseded_report_paths(session=session, result_id=first) == []
    _export(session, first, ExportKind.SR, "PACS1")
    _export(session, first, ExportKind.SR, "PACS2")  # the same SR file for two destinations
    _export(session, first, ExportKind.SC, "PACS1")
    second = _job_and_result(session, SERIES, 2)
    _export(session, second, ExportKind.SR, "PACS1")
    third = _job_and_result(session, SERIES, 3)
    elsewhere = _job_and_result(session, f"{OTHER_STUDY}.1", 5, study=OTHER_STUDY)
    _export(session, elsewhere, ExportKind.SR, "PACS1")  # another study's SR never counts
    session.flush()

    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", count)
    try:
        paths = db.exports.superseded_report_paths(session=session, result_id=third)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert paths == [f"outbox/{first}-sr.dcm", f"outbox/{second}-sr.dcm"]
    assert len(statements) == 1, statements
    # An earlier result written again (a requeue) replaces only what came before it: never a
    # later report, superseded or not.
    assert db.exports.superseded_report_paths(session=session, result_id=first) == []
    assert db.exports.superseded_report_paths(session=session, result_id=second) == [
        f"outbox/{first}-sr.dcm"
    ]
    assert db.exports.superseded_report_paths(session=session, result_id=elsewhere) == []
    # Another series of the same study reports now: it revises the study's reports, SRs and all.
    _export(session, third, ExportKind.SR, "PACS1")
    other = _job_and_result(session, OTHER_SERIES, 4)
    assert db.exports.superseded_report_paths(session=session, result_id=other) == [
        f"outbox/{first}-sr.dcm",
        f"outbox/{second}-sr.dcm",
        f"outbox/{third}-sr.dcm",
    ]
    with pytest.raises(NotFoundError):
        db.exports.superseded_report_paths(session=session, result_id=999_999)
