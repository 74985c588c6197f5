"""DICOMweb destinations: the SR by STOW-RS into Orthanc's DICOMweb plugin, in the CT's study."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import db.exports
from db.enums import ExportStatus
from tests.notify_peers import OrthancDicomWeb
from tests.worker.helpers import notify_context, receive_accessioned_series
from worker.config import WorkerRuntime
from worker.pipeline import process_series


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancDicomWeb]:
    server = OrthancDicomWeb(tmp_path / "orthanc")
    yield server
    server.discard()


def _upload(orthanc: OrthancDicomWeb, path: Path) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{orthanc.http_port}/instances", data=path.read_bytes(), method="POST"
    )
    request.add_header("Authorization", "Basic c3Ryb2tlOnRyaWFnZQ==")
    with urllib.request.urlopen(request, timeout=10):
        pass


def test_sr_is_stored_by_stow_rs_in_the_same_study(
    runtime: WorkerRuntime, checkpoint: Path, orthanc: OrthancDicomWeb
) -> None:
    url = orthanc.dicomweb_url
    ctx = notify_context(
        runtime,
        checkpoint,
        dicomweb=[
            {"url": url, "username": "stroke", "password": "triage", "allow_plain_http": True}
        ],
    )
    job_id, series_uid = receive_accessioned_series(ctx)
    ct = sorted((runtime.storage_dir / "series").glob("*.dcm"))[0]
    _upload(orthanc, ct)
    for _ in range(2):  # a re-run sends nothing twice
        process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    with ctx.sessions() as session:
        (export,) = db.exports.list_exports(session=session)
        assert export.destination == url and export.status == ExportStatus.SENT
        sr_uid = export.sop_instance_uid
    (study,) = orthanc.get("/studies?expand")
    modalities = sorted(
        orthanc.get(f"/series/{series}")["MainDicomTags"]["Modality"] for series in study["Series"]
    )
    assert modalities == ["CT", "SR"]
    instances = orthanc.get(f"/studies/{study['ID']}/instances")
    assert sr_uid in {instance["MainDicomTags"]["SOPInstanceUID"] for instance in instances}


def test_stow_rs_with_the_wrong_password_fails_and_is_retried(
    runtime: WorkerRuntime, checkpoint: Path, orthanc: OrthancDicomWeb
) -> None:
    url = orthanc.dicomweb_url
    ctx = notify_context(
        runtime,
        checkpoint,
        dicomweb=[{"url": url, "username": "stroke", "password": "nope", "allow_plain_http": True}],
    )
    job_id, series_uid = receive_accessioned_series(ctx)
    process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
    with ctx.sessions() as session:
        (export,) = db.exports.list_exports(session=session)
        assert export.status == ExportStatus.FAILED and "401" in (export.last_error or "")
    assert orthanc.get("/studies") == []
