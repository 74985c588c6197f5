"""Shadow mode and a challenger model, end to end with Orthanc as the PACS and the scanner."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

import db.performance
import db.results
from db.engine import SessionFactory, create_engine_for, make_session_factory
from model.checkpoint import create_random_checkpoint
from model.phantom import Lesion, write_phantom_series
from tests.e2e.helpers import PacsStub, Service
from tests.e2e.test_e2e_orthanc import (
    ORTHANC_AE,
    Orthanc,
    _series_by_modality,
    _start_service,
    _upload_and_send,
)
from tests.helpers import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def orthanc(tmp_path: Path, service: Service) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path / "orthanc", int(service.env["STROKE_TRIAGE_LISTENER__PORT"]))
    server.start()
    yield server
    server.discard()


def _sessions(service: Service) -> SessionFactory:
    url = f"sqlite:///{Path(service.env['STROKE_TRIAGE_DATA_DIR']) / 'stroke-triage.db'}"
    return make_session_factory(create_engine_for(url))


def _wait_for_verdicts(
    service: Service, count: int, timeout_s: float = 120.0
) -> list[db.performance.ScoredSeries]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with _sessions(service)() as session:
                found = db.performance.scored_series(session=session)
        except Exception:  # the schema may not exist yet while the service starts
            found = []
        if len(found) >= count:
            return found
        time.sleep(0.5)
    raise AssertionError(f"never {count} verdicts:\n{service.logs()}")


def _phantom(tmp_path: Path) -> list[Path]:
    return write_phantom_series(tmp_path / "ct", n_slices=6, size=64, lesion=Lesion.INFARCT)


def test_shadow_mode_stores_the_result_and_sends_nothing(
    tmp_path: Path, service: Service, orthanc: Orthanc
) -> None:
    _start_service(service, orthanc, mode="shadow")
    study_id = _upload_and_send(orthanc, _phantom(tmp_path))
    [verdict] = _wait_for_verdicts(service, 1)
    assert verdict.role == "shadow"
    with _sessions(service)() as session:
        [row] = db.results.list_results(session=session)
    assert row.shadow and row.export_status is None
    time.sleep(2.0)  # a report, if one were (wrongly) sent, would have arrived by now
    assert _series_by_modality(orthanc, study_id, "SR") == []
    listed = run_cli(["results"], env=service.env)
    assert listed.returncode == 0, listed.stderr
    assert "shadow" in listed.stdout


def test_shadow_mode_sends_the_report_only_to_the_pacs_marked_shadow(
    tmp_path: Path, service: Service, orthanc: Orthanc
) -> None:
    (tmp_path / "test-pacs").mkdir()
    test_pacs = PacsStub(tmp_path / "test-pacs")
    try:
        pacs = [
            {"ae_title": ORTHANC_AE, "host": "127.0.0.1", "port": orthanc.dicom_port},
            {"ae_title": test_pacs.ae_title, "host": "127.0.0.1", "port": test_pacs.port,
             "shadow": True},
        ]  # fmt: skip
        _start_service(service, orthanc, mode="shadow", pacs=json.dumps(pacs))
        study_id = _upload_and_send(orthanc, _phantom(tmp_path))
        [received] = test_pacs.wait_for(1, timeout_s=120)
        report = pydicom.dcmread(received)
        assert report.Modality == "SR"
        [verdict] = _wait_for_verdicts(service, 1)
        assert verdict.role == "shadow"
        assert report.SeriesInstanceUID != verdict.series_instance_uid
        with _sessions(service)() as session:
            [row] = db.results.list_results(session=session)
        assert row.shadow
        time.sleep(2.0)  # a report, if one were (wrongly) sent to the live PACS, is there now
        assert _series_by_modality(orthanc, study_id, "SR") == []
        assert len(test_pacs.wait_for(1)) == 1  # exactly one report, to the shadow PACS
    finally:
        test_pacs.server.shutdown()


def test_challenger_gives_a_second_result_and_no_second_report(
    tmp_path: Path, service: Service, orthanc: Orthanc
) -> None:
    challenger = create_random_checkpoint(tmp_path / "challenger", seed=1)
    _start_service(service, orthanc, challenger_checkpoint=str(challenger))
    study_id = _upload_and_send(orthanc, _phantom(tmp_path))
    verdicts = _wait_for_verdicts(service, 2)
    assert sorted(v.role for v in verdicts) == ["challenger", "live"]
    assert len({v.model_sha256 for v in verdicts}) == 2
    assert len({v.series_instance_uid for v in verdicts}) == 1
    deadline = time.monotonic() + 60
    while not _series_by_modality(orthanc, study_id, "SR") and time.monotonic() < deadline:
        time.sleep(0.3)
    time.sleep(1.0)
    [sr] = _series_by_modality(orthanc, study_id, "SR")
    assert len(sr["Instances"]) == 1  # one report: the live model's
