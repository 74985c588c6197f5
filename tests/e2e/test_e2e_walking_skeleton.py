"""A CT series in, a Structured Report out: storescu -> listener -> worker -> PACS."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

import db.results
from db.engine import create_engine_for, make_session_factory
from tests.e2e.helpers import PacsStub, Service, storescu
from tests.helpers import require_tool

pytestmark = pytest.mark.slow


def _ge_files(ge_head_ct: Path) -> list[Path]:
    files = sorted(ge_head_ct.glob("*.dcm"))
    assert len(files) == 28
    return files


def _check_report(report: Path, sources: list[Path]) -> None:
    source_sets = [pydicom.dcmread(p, stop_before_pixels=True) for p in sources]
    sr = hd.sr.srread(report)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert sr.StudyInstanceUID == source_sets[0].StudyInstanceUID
    assert sr.SeriesInstanceUID != source_sets[0].SeriesInstanceUID
    assert sr.VerificationFlag == "UNVERIFIED"
    referenced = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in source_sets}
    # The finding is the model's own (the random checkpoint's: stroke; a haemorrhage model: ICH),
    # then the series read (issue 26).
    verdict = sr.SeriesDescription.split(" - series ")[0]
    assert re.fullmatch(r"AI \S+ TRIAGE: (NOT )?SUSPECTED", verdict)

    dciodvfy = require_tool("dciodvfy", "dicom3tools")
    dsrdump = require_tool("dsrdump", "dcmtk")
    verified = subprocess.run([dciodvfy, str(report)], capture_output=True, text=True, check=False)
    errors = [
        line
        for line in (verified.stdout + verified.stderr).splitlines()
        if line.startswith("Error")
    ]
    assert not errors, "\n".join(errors)
    dumped = subprocess.run([dsrdump, str(report)], capture_output=True, text=True, check=False)
    assert dumped.returncode == 0, dumped.stderr
    assert 'TEXT:(,,"Summary")="AI ' in dumped.stdout


def _check_database(url: str, series_uid: str) -> None:
    engine = create_engine_for(url)
    with make_session_factory(engine)() as session:
        rows = [
            r
            for r in db.results.list_results(session=session)
            if r.series_instance_uid == series_uid
        ]
    engine.dispose()
    assert len(rows) == 1
    assert 0.0 <= rows[0].probability <= 1.0
    assert rows[0].instance_count == 28


def test_embedded_defaults_one_process(
    service: Service, test_pacs: PacsStub, ge_head_ct: Path
) -> None:
    files = _ge_files(ge_head_ct)
    port = int(service.env["STROKE_TRIAGE_LISTENER__PORT"])
    service.start("up")
    service.wait_listening(port)
    storescu(files, port)
    try:
        (report,) = test_pacs.wait_for(1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{service.logs()}") from exc
    _check_report(report, files)
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    db_file = Path(service.env["STROKE_TRIAGE_DATA_DIR"]) / "stroke-triage.db"
    _check_database(f"sqlite:///{db_file}", series_uid)
    table = subprocess.run(
        [sys.executable, "-m", "stroke_triage", "results"],
        env=service.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    (row,) = [line for line in table.splitlines() if series_uid in line]
    assert "SUSPECTED" in row or "not suspected" in row
    assert " 28 " in row


def test_redis_and_postgres_two_processes(
    postgres_schema_url: str,  # first: dropped after the services have stopped
    service: Service,
    test_pacs: PacsStub,
    ge_head_ct: Path,
    redis_url: str,
) -> None:
    service.env["STROKE_TRIAGE_DATABASE_URL"] = postgres_schema_url
    service.env["STROKE_TRIAGE_BROKER_URL"] = redis_url
    files = _ge_files(ge_head_ct)
    port = int(service.env["STROKE_TRIAGE_LISTENER__PORT"])
    service.start("listen")
    service.start("work")
    service.wait_listening(port)
    storescu(files, port)
    try:
        (report,) = test_pacs.wait_for(1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{service.logs()}") from exc
    _check_report(report, files)
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    _check_database(postgres_schema_url, series_uid)
