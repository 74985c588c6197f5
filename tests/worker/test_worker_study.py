"""One report per study in the worker: a better series revises the study's report (SR, alert),
the SR names the classified series, and the preview goes with the alert (e-mail opt-in, a link
elsewhere)."""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

import db.jobs
import db.notifications
import db.receiving
import db.results
import db.studies
from db.enums import NotificationEvent
from model.phantom import Lesion, write_phantom_series
from tests.helpers import dciodvfy_errors
from tests.notify_peers import (
    Certificate,
    MllpListener,
    SmtpServer,
    WebhookReceiver,
    make_certificate,
)
from tests.worker.helpers import Pacs, notify_context
from worker.config import WorkerRuntime
from worker.context import WorkerContext
from worker.notify.send import sweep_notifications
from worker.pipeline import process_series
from worker.preview import GAP, PREVIEW_SLICES, TILE_SIZE, PreviewText, _sides, render_preview

CONSOLE_URL = "https://triage.hospital.local"
STUDY = "1.2.826.0.1.3680043.10.26"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def _checkpoint(source: Path, folder: Path, threshold: float) -> Path:
    """A copy of the tiny checkpoint whose threshold makes every verdict the same."""
    shutil.copytree(source, folder)
    spec = json.loads((folder / "spec.json").read_text())
    spec["threshold"] = threshold
    (folder / "spec.json").write_text(json.dumps(spec))
    return folder


def _receive(ctx: WorkerContext, folder: str, *, number: int, description: str) -> tuple[int, str]:
    """A phantom series of STUDY with this number and description, recorded; its new job."""
    paths = write_phantom_series(
        ctx.runtime.storage_dir / folder,
        n_slices=6,
        size=64,
        lesion=Lesion.HAEMORRHAGE,
        study_instance_uid=STUDY,
    )
    for path in paths:
        dataset = pydicom.dcmread(path)
        dataset.SeriesNumber, dataset.SeriesDescription = number, description
        dataset.AccessionNumber = "ACC26"
        dataset.save_as(path)
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
    series_uid = str(headers[0].SeriesInstanceUID)
    with ctx.sessions() as session:
        db.receiving.record_instances(
            session=session,
            study_instance_uid=STUDY,
            series_instance_uid=series_uid,
            modality="CT",
            series_description=description,
            calling_ae_title="SCANNER",
            instances=[
                db.receiving.InstanceRecord(
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    path=str(path.relative_to(ctx.runtime.storage_dir)),
                    transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                    size_bytes=path.stat().st_size,
                    received_at=datetime.now(UTC),
                )
                for path, ds in zip(paths, headers, strict=True)
            ],
        )
        db.studies.record_series_facts(
            session=session,
            series_instance_uid=series_uid,
            series_number=number,
            convolution_kernel="STANDARD",
            slice_thickness_mm=5.0,
            axial_slices=6,
            coverage_mm=30.0,
            derived=False,
        )
        job = db.jobs.create_job(session=session, series_instance_uid=series_uid)
        db.jobs.mark_job_queued(session=session, job_id=job.id, task_id="t")
        session.commit()
        return job.id, series_uid


def _attachments(message: Message) -> list[Message]:
    return [part for part in message.walk() if part.get_content_disposition() == "attachment"]


def test_a_better_series_revises_the_studys_report_and_alert(
    runtime: WorkerRuntime, checkpoint: Path, certificate: Certificate, tmp_path: Path
) -> None:
    webhook = WebhookReceiver(certificate, secret=b"s3cret")
    smtp = SmtpServer(certificate, user="triage", password="pw")
    mllp = MllpListener("AA")
    destinations: list[dict[str, Any]] = [
        # Told the first report: told its revision too.
        webhook.destination(on=["suspected"]),
        smtp.destination(name="mail-preview", attach_preview=True, on=["suspected"]),
        smtp.destination(name="mail-link", on=["suspected"]),
        {"kind": "hl7", "name": "ris", "host": "127.0.0.1", "port": mllp.port, "on": ["suspected"]},
    ]
    pacs = Pacs()
    settings = {
        "notifications": destinations,
        "console_url": CONSOLE_URL,
        "pacs": [pacs.destination],
    }
    suspecting = notify_context(
        runtime, _checkpoint(checkpoint, tmp_path / "always", 0.0), **settings
    )
    clearing = notify_context(runtime, _checkpoint(checkpoint, tmp_path / "never", 1.0), **settings)
    try:
        first_job, first_uid = _receive(suspecting, "thin", number=4, description="HEAD 1.25mm")
        first = process_series(suspecting, job_id=first_job, series_instance_uid=first_uid)
        better_job, better_uid = _receive(clearing, "brain", number=2, description="HEAD 5mm STD")
        better = process_series(clearing, job_id=better_job, series_instance_uid=better_uid)
        again = process_series(clearing, job_id=better_job, series_instance_uid=better_uid)
        sweep_notifications(clearing.sessions, config=clearing.config)
    finally:
        webhook.stop()
        smtp.stop()
        mllp.stop()
        pacs.stop()

    # One current report for the study: the better series', naming the one it revises.
    assert (first.suspected, better.suspected) == (True, False)
    assert again.skipped == "done" and again.result_id is None
    with clearing.sessions() as session:
        detail = db.studies.study_detail(session=session, study_instance_uid=STUDY)
        current = detail.current_report
        assert current is not None and current.result_id == better.result_id
        assert current.replaces_result_id == first.result_id
        assert [r.superseded for r in detail.reports] == [False, True]
        assert all(report.has_preview for report in detail.reports)

    # The SR names the classified series and lists the earlier SR as its predecessor.
    assert first.report_path is not None and better.report_path is not None
    sr = pydicom.dcmread(better.report_path)
    earlier_sr = pydicom.dcmread(first.report_path)
    assert sr.SeriesDescription == "AI STROKE TRIAGE: NOT SUSPECTED - series 2 HEAD 5mm STD"
    assert earlier_sr.SeriesDescription == "AI STROKE TRIAGE: SUSPECTED - series 4 HEAD 1.25mm"
    predecessors = [
        item.ReferencedSOPInstanceUID
        for study in sr.PredecessorDocumentsSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]
    assert predecessors == [earlier_sr.SOPInstanceUID]
    assert pacs.uids("SR") == [earlier_sr.SOPInstanceUID, sr.SOPInstanceUID]  # each once
    texts = [
        item.TextValue
        for group in sr.ContentSequence
        for item in getattr(group, "ContentSequence", [])
        for item in [item, *getattr(item, "ContentSequence", [])]
        if getattr(item, "ValueType", "") == "TEXT"
    ]
    assert "Classified series: series 2 HEAD 5mm STD" in texts, texts
    assert dciodvfy_errors(better.report_path) == []

    # The pager (on: suspected) got the SUSPECTED report and, as its revision, the NOT SUSPECTED.
    first_doc, revision = webhook.accepted
    assert (first_doc["verdict"], revision["verdict"]) == ("SUSPECTED", "NOT SUSPECTED")
    assert first_doc["revises"] is None
    assert revision["revises"]["result_id"] == first.result_id
    assert revision["revises"]["verdict"] == "SUSPECTED"
    assert revision["revises"]["series_number"] == 4
    assert (revision["series_number"], revision["series_description"]) == (2, "HEAD 5mm STD")
    assert revision["preview_url"] == f"{CONSOLE_URL}/previews/{better.result_id}.jpg"
    assert first_doc["preview_url"] == f"{CONSOLE_URL}/previews/{first.result_id}.jpg"

    # E-mail: the preview attached only where the destination opts in; the link in both.
    by_name: dict[str, list[Message]] = {}
    with clearing.sessions() as session:
        for row in db.notifications.list_notifications(session=session):
            if row.channel == "email":
                by_name.setdefault(row.destination, []).append(row)  # type: ignore[arg-type]
    assert sorted(by_name) == ["mail-link", "mail-preview"]
    subjects = sorted(str(message["Subject"]) for message in smtp.messages)
    assert subjects == [
        "AI STROKE TRIAGE: NOT SUSPECTED (REVISED) - ACC26",
        "AI STROKE TRIAGE: NOT SUSPECTED (REVISED) - ACC26",
        "AI STROKE TRIAGE: SUSPECTED - ACC26",
        "AI STROKE TRIAGE: SUSPECTED - ACC26",
    ]
    attached = [m for m in smtp.messages if _attachments(m)]
    assert len(attached) == 2  # mail-preview's two messages, never mail-link's
    for message in attached:
        (part,) = _attachments(message)
        assert part.get_content_type() == "image/jpeg"
        image = Image.open(io.BytesIO(part.get_payload(decode=True)))  # type: ignore[arg-type]
        assert image.format == "JPEG" and image.height == 66 + TILE_SIZE
    for message in smtp.messages:
        body = next(p for p in message.walk() if p.get_content_type() == "text/plain")
        text = body.get_payload(decode=True).decode()  # type: ignore[union-attr]
        assert f"{CONSOLE_URL}/previews/" in text and "Classified series: series" in text
        if "REVISED" in str(message["Subject"]):
            assert "This report revises the study's earlier one (series 4 HEAD 1.25mm: " in text

    # HL7: the revision is a correction (OBR-25 C), with the series and a pointer to the preview.
    first_oru, corrected = mllp.messages
    assert first_oru.oru_r01_patient_result.oru_r01_order_observation.obr.obr_25.to_er7() == "F"
    order = corrected.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_25.to_er7() == "C"
    observations = {
        group.obx.obx_3.to_er7().split("^")[0]: group.obx for group in order.oru_r01_observation
    }
    assert observations["SERIES"].obx_5.to_er7() == "series 2 HEAD 5mm STD"
    assert observations["PREVIEW"].obx_2.to_er7() == "RP"
    assert (
        observations["PREVIEW"]
        .obx_5.to_er7()
        .startswith(f"{CONSOLE_URL}/previews/{better.result_id}.jpg^")
    )
    assert "REVISES" in observations


def test_without_a_console_url_no_preview_is_linked(
    runtime: WorkerRuntime, checkpoint: Path, certificate: Certificate, tmp_path: Path
) -> None:
    webhook = WebhookReceiver(certificate, secret=b"s3cret")
    destination = webhook.destination(on=["suspected", "not_suspected"])
    ctx = notify_context(runtime, checkpoint, notifications=[destination])
    try:
        job_id, series_uid = _receive(ctx, "one", number=3, description="HEAD")
        outcome = process_series(ctx, job_id=job_id, series_instance_uid=series_uid)
        sweep_notifications(ctx.sessions, config=ctx.config)
    finally:
        webhook.stop()
    (document,) = webhook.accepted
    assert document["preview_url"] is None and document["series_url"] is None
    with ctx.sessions() as session:
        path = db.studies.preview_path(session=session, result_id=outcome.result_id or 0)
        rows = db.notifications.list_notifications(session=session)
    assert path is not None and Path(path).is_file()  # made all the same, for the console
    assert [row.event for row in rows] == [NotificationEvent(document["event"])]


def _slice(
    folder: Path, number: int, orientation: list[float], *, bright_left: bool
) -> pydicom.Dataset:
    """A phantom slice whose image half (left or right) is 80 HU, the other half air."""
    (path,) = write_phantom_series(folder / str(number), n_slices=1, size=64)
    dataset = pydicom.dcmread(path)
    pixels = np.full((64, 64), -1000 + 1024, dtype=np.int16)  # stored value of air
    pixels[:, slice(0, 32) if bright_left else slice(32, 64)] = 80 + 1024
    dataset.PixelData = pixels.astype("<i2").tobytes()
    dataset.ImageOrientationPatient = orientation
    dataset.InstanceNumber = number
    return dataset


def test_the_preview_is_a_small_jpeg_of_the_top_slices_with_sides_marked(tmp_path: Path) -> None:
    standard = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    flipped = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert _sides(_slice(tmp_path, 1, standard, bright_left=True)) == ("R", "L")
    assert _sides(_slice(tmp_path, 2, flipped, bright_left=True)) == ("L", "R")
    sagittal = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    assert _sides(_slice(tmp_path, 3, sagittal, bright_left=True)) == ("A", "P")
    slices = [_slice(tmp_path, n, standard, bright_left=n % 2 == 0) for n in range(4, 10)]
    jpeg = render_preview(
        slices,
        PreviewText(
            headline="AI ICH TRIAGE: SUSPECTED",
            probability=0.734,
            threshold=0.42,
            model="vit-ich 2.0.0",
            series="series 2 HEAD 5mm STD",
        ),
    )
    (tmp_path / "preview.jpg").write_bytes(jpeg)
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.mode == "RGB"
    # At most four slices, side by side.
    assert image.size == (TILE_SIZE * PREVIEW_SLICES + GAP * (PREVIEW_SLICES - 1), 66 + TILE_SIZE)
    assert len(jpeg) < 150_000
    gray = np.asarray(image.convert("L"), dtype=np.float64)
    tile = gray[66 + 40 : 66 + TILE_SIZE - 40, 40 : TILE_SIZE - 40]
    half = tile.shape[1] // 2
    # The first (most suspicious) slice is bright on its left half, in the brain window.
    assert tile[:, :half].mean() > 200 and tile[:, half:].mean() < 60
    banner = gray[:60]
    assert banner.max() > 200 and (banner > 128).mean() > 0.01  # text is burned in
    with pytest.raises(ValueError, match="at least one slice"):
        render_preview([], PreviewText("x", 0.5, 0.5, "m", "s"))
