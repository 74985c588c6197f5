"""The recorder: one transaction per batch window, and a flush that does not wait for it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

import db.receiving
from db.engine import SessionFactory, create_engine_for, make_session_factory, migrate
from db.models import Instance
from listener.inspection import ReceivedInstance
from listener.recorder import InstanceRecorder, PendingRecord

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[SessionFactory]:
    """Sessions on a migrated SQLite file."""
    engine = create_engine_for(f"sqlite:///{tmp_path / 'records.db'}")
    migrate(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _pending(study: str, series: str) -> PendingRecord:
    uid = generate_uid()
    path = f"{study}/{series}/{uid}.dcm"
    return PendingRecord(
        instance=ReceivedInstance(
            study_instance_uid=study,
            series_instance_uid=series,
            sop_instance_uid=uid,
            sop_class_uid=CT_IMAGE,
            modality="CT",
            series_description="head",
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
