"""The recorder: one transaction per batch window, a flush that does not wait for it, and a
thread that nothing stops: a record the database refuses for good is left to the start-up scan."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select, text

import db.receiving
from db.engine import SessionFactory, create_engine_for, make_session_factory, migrate
from db.models import Instance
from listener.inspection import ReceivedInstance
from listener.recorder import InstanceRecorder, PendingRecord
from listener.recovery import record_unrecorded
from listener.status import StoreStatus
from listener.storage import instance_relpath
from tests.helpers import postgres_schema, relaxed_dicom_validation
from tests.listener.helpers import LISTENER_AE, RunningListener, ct_dataset, scu, storescu

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
#: A receive time that is no time: a record the recorder cannot store (not a database error).
NO_TIME = cast(datetime, None)
#: A Series Description as some scanners write it: a NUL, then a line feed, inside the value.
NUL_DESCRIPTION = "HEAD\x00\nCT"


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[SessionFactory]:
    """Sessions on a migrated SQLite file."""
    engine = create_engine_for(f"sqlite:///{tmp_path / 'records.db'}")
    migrate(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionFactory]:
    """Sessions on a migrated SQLite file, or on a new PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.db'}"
        engine = create_engine_for(url)
        migrate(engine)
        yield make_session_factory(engine)
        engine.dispose()
        return
    with postgres_schema("recorder") as url:
        engine = create_engine_for(url)
        migrate(engine)
        yield make_session_factory(engine)
        engine.dispose()


def _pending(
    study: str, series: str, *, description: str = "head", uid: str | None = None
) -> PendingRecord:
    uid = uid or generate_uid()
    path = f"{study}/{series}/{uid}.dcm"
    return PendingRecord(
        instance=ReceivedInstance(
            study_instance_uid=study,
            series_instance_uid=series,
            sop_instance_uid=uid,
            sop_class_uid=CT_IMAGE,
            modality="CT",
            series_description=description,
            relpath=Path(path),
        ),
        calling_ae_title="CT1",
        record=db.receiving.InstanceRecord(
            sop_instance_uid=uid,
            sop_class_uid=CT_IMAGE,
            path=path,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            size_bytes=1000,
            received_at=datetime.now(UTC),
        ),
    )


def _recorded(sessions: SessionFactory) -> int:
    with sessions() as session:
        return int(session.execute(select(func.count(Instance.id))).scalar_one())


def test_records_wait_for_the_window_and_a_flush_commits_them_at_once(
    sessions: SessionFactory,
) -> None:
    recorder = InstanceRecorder(session_factory=sessions, batch_window_s=60.0)
    recorder.start()
    try:
        study, series = generate_uid(), generate_uid()
        for _ in range(5):
            recorder.submit(_pending(study, series))
        time.sleep(0.3)
        assert _recorded(sessions) == 0  # still inside the window
        assert recorder.backlog == 5
        start = time.monotonic()
        assert recorder.flush(timeout_s=30.0)
        assert time.monotonic() - start < 30.0
        assert _recorded(sessions) == 5
        assert recorder.backlog == 0
    finally:
        recorder.stop()


def test_stop_commits_what_is_queued_without_waiting_for_the_window(
    sessions: SessionFactory,
) -> None:
    recorder = InstanceRecorder(session_factory=sessions, batch_window_s=60.0)
    recorder.start()
    study, series = generate_uid(), generate_uid()
    recorder.submit(_pending(study, series))
    start = time.monotonic()
    recorder.stop(timeout_s=30.0)
    assert time.monotonic() - start < 30.0
    assert _recorded(sessions) == 1


def _recorded_uids(sessions: SessionFactory) -> set[str]:
    with sessions() as session:
        return set(session.execute(select(Instance.sop_instance_uid)).scalars())


def test_a_permanent_database_error_is_left_out_and_the_rest_is_recorded(
    any_sessions: SessionFactory,
) -> None:
    """PostgreSQL refuses a NUL character in text for good (a DataError), whatever the retry;
    on SQLite the same record has a time that cannot be compared (a TypeError, not SQL)."""
    recorder = InstanceRecorder(session_factory=any_sessions, batch_window_s=60.0)
    recorder.start()
    try:
        study = generate_uid()
        good = [_pending(study, generate_uid()) for _ in range(3)]
        poison = _pending(study, generate_uid(), description="HEAD\x00CT")
        if _dialect(any_sessions) == "sqlite":
            poison = dataclasses.replace(
                poison, record=dataclasses.replace(poison.record, received_at=NO_TIME)
            )
        tickets = [recorder.submit(item) for item in (good[0], poison, *good[1:])]
        assert recorder.flush(timeout_s=30.0), "the recorder is stuck on the poison record"
        assert _recorded_uids(any_sessions) == {item.record.sop_instance_uid for item in good}
        assert [recorder.wait_for(ticket, 0) for ticket in tickets] == [True, False, True, True]
        # The thread lives on: a later record is committed as usual.
        ticket = recorder.submit(_pending(study, generate_uid()))
        assert recorder.flush(timeout_s=30.0) and recorder.wait_for(ticket, 0)
        assert len(_recorded_uids(any_sessions)) == 4
    finally:
        recorder.stop()


def _write_with_nul_description(storage: Path) -> tuple[Path, str, str, str]:
    """A stored CT file whose Series Description holds a NUL (C-string padding in the middle)."""
    dataset = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=1)
    with relaxed_dicom_validation():  # a control character in LO, on purpose
        dataset.SeriesDescription = NUL_DESCRIPTION
        study, series = str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID)
        uid = str(dataset.SOPInstanceUID)
        path = storage / instance_relpath(study, series, uid)
        path.parent.mkdir(parents=True)
        dataset.save_as(path, enforce_file_format=True)
    return path, study, series, uid


def test_a_record_left_out_is_recorded_from_its_file_by_the_start_up_scan(
    tmp_path: Path,
) -> None:
    """The guarantee behind leaving a record out: its file is on disk, and the scan that runs
    at every start (and after a receiving process dies) records it, even when what the
    database refused came from the file itself (PostgreSQL refuses a NUL in text for good)."""
    storage = tmp_path / "storage"
    path, study, series, uid = _write_with_nul_description(storage)
    with postgres_schema("recorder") as url:
        engine = create_engine_for(url)
        migrate(engine)
        sessions = make_session_factory(engine)
        try:
            # The record as the file's own text makes it: refused for good, and left out.
            poison = _pending(study, series, uid=uid, description=NUL_DESCRIPTION)
            recorder = InstanceRecorder(session_factory=sessions, batch_window_s=0.0)
            recorder.start()
            try:
                ticket = recorder.submit(poison)
                assert not recorder.wait_for(ticket, timeout_s=30.0)
                assert recorder.refused(ticket)
            finally:
                recorder.stop()
            assert _recorded_uids(sessions) == set()
            assert record_unrecorded(storage, sessions) == 1
            assert _recorded_uids(sessions) == {uid}
            with sessions() as session:
                recorded = db.receiving.get_series(session=session, series_instance_uid=series)
                assert recorded.series_description == "HEAD  CT"
            assert record_unrecorded(storage, sessions) == 0
        finally:
            engine.dispose()
    assert path.is_file()


def test_a_received_description_with_control_characters_is_recorded_scrubbed(
    postgres_schema_url: str,
    start_listener_for_test: Callable[..., RunningListener],
    tmp_path: Path,
) -> None:
    """Sent by a scanner (storescu) to a listener on PostgreSQL: recorded, not refused.

    (The schema is asked for first, so that it is dropped after the listener stopped.)"""
    running = start_listener_for_test(database_url=postgres_schema_url, wait_for_database=True)
    path, _, series, uid = _write_with_nul_description(tmp_path / "sent")
    sent = storescu([path], running.port)
    assert sent.returncode == 0, sent.stderr
    running.listener.recorder.flush(30)
    with running.sessions() as session:
        recorded = db.receiving.get_series(session=session, series_instance_uid=series)
        assert recorded.series_description == "HEAD  CT"
    assert _recorded_uids(running.sessions) == {uid}


def _dialect(sessions: SessionFactory) -> str:
    with sessions() as session:
        return session.get_bind().dialect.name


def test_a_refused_record_is_answered_and_logged_as_refused_not_as_late(
    postgres_schema_url: str,
    start_listener_for_test: Callable[..., RunningListener],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With wait_for_database, a record the database refuses for good is answered 0xA700 and
    logged as refused (here a constraint that no instance meets stands for any refusal)."""
    running = start_listener_for_test(database_url=postgres_schema_url, wait_for_database=True)
    with running.sessions() as session:
        session.execute(
            text("ALTER TABLE instances ADD CONSTRAINT refuse_all CHECK (size_bytes < 0)")
        )
        session.commit()
    dataset = ct_dataset(study_uid=generate_uid(), series_uid=generate_uid(), number=1)
    assoc = scu().associate("127.0.0.1", running.port, ae_title=LISTENER_AE)
    assert assoc.is_established
    try:
        answer = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    assert answer.Status == StoreStatus.OUT_OF_RESOURCES
    assert _recorded_uids(running.sessions) == set()
    messages = [record.getMessage() for record in caplog.records]
    assert any("the database refused its record" in message for message in messages), messages
    assert not any("not committed within" in message for message in messages), messages
