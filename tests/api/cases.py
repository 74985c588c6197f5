"""Cases a person must not be misled by, and cases to find, for the console tests (issue 24).

- a series whose report never reached the PACS (its SR is a dead letter);
- a series sent again after its report (a PACS re-route): its last instance is later than
  its report;
- our own SR and SC, sent back to us by the PACS (an auto-route), recorded and skipped as the
  listener does;
- two patients' series with stored files (names, IDs, accession numbers, station names), one
  with a 512-pixel heat-map Secondary Capture;
- a notification of each state, one of them dead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)

import db.exports
import db.jobs
import db.notifications
import db.receiving
import db.results
from db.engine import Session, SessionFactory
from db.enums import ExportKind, NotificationChannel, NotificationEvent
from db.receiving import InstanceRecord

ROOT = "1.2.826.0.1.3680043.10.24"
SUBDURAL = db.results.FindingScore("SCT", "35486000", "Subdural hemorrhage", "SDH", 0.4)
"""A further finding of the model behind the ``named`` case (a multi-output model)."""
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR

PATIENT = ("Quolmbyx^Zerwintha", "PHI7734121X", "ACC-24-0001", "CT_NORTH")
OTHER_PATIENT = ("Brennick^Oswald", "PID-55-OTHER", "ACC-24-0002", "")


@dataclass(frozen=True)
class Cases:
    """UIDs and ids of the cases :func:`seed_cases` stored."""

    not_delivered: str
    not_delivered_dead_sr: int
    resent: str
    echo_sr: str
    echo_sc: str
    named: str
    named_study: str
    named_sc_export: int
    other: str
    dead_notification: int
    sent_notification: int


def _header_file(
    path: Path,
    *,
    sop_class: str,
    sop_uid: str,
    study: str,
    series: str,
    patient: tuple[str, str, str, str],
    pixels: np.ndarray | None = None,
) -> None:
    """A DICOM file with the header fields the console reads (pixels only for the SC)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.AccessionNumber = patient[0], patient[1], patient[2]
    if patient[3]:
        ds.StationName = patient[3]
    ds.Modality = "OT" if pixels is not None else "CT"
    ds.StudyDate = "20260301"
    ds.InstanceNumber = 1
    if pixels is not None:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
        ds.PlanarConfiguration = 0
        ds.Rows, ds.Columns = pixels.shape[:2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _record(
    session: Session,
    uid: str,
    *,
    at: datetime,
    ae: str = "ORTHANC",
    modality: str = "CT",
    sop_uids: list[str] | None = None,
    sop_class: str = CTImageStorage,
    study: str | None = None,
) -> None:
    uids = sop_uids or [f"{uid}.{n}" for n in range(1, 4)]
    db.receiving.record_instances(
        session=session,
        study_instance_uid=study or f"{uid}.0",
        series_instance_uid=uid,
        modality=modality,
        series_description="HEAD" if modality == "CT" else f"AI {modality}",
        calling_ae_title=ae,
        instances=[
            InstanceRecord(
                sop_instance_uid=sop,
                sop_class_uid=sop_class,
                path=f"{uid}/{n}.dcm",
                transfer_syntax_uid=ExplicitVRLittleEndian,
                size_bytes=1000,
                received_at=at + timedelta(seconds=n),
            )
            for n, sop in enumerate(uids)
        ],
    )


def _classified(
    session: Session,
    uid: str,
    *,
    at: datetime,
    suspected: bool = True,
    finding: tuple[str, str] = ("ICH", "Intracranial hemorrhage"),
    further: Sequence[db.results.FindingScore] = (),
) -> tuple[int, int]:
    """Job (complete at +5 s, started +6 s) and result of a recorded series: (job, result)."""
    job = db.jobs.create_job(
        session=session, series_instance_uid=uid, now=at + timedelta(seconds=5)
    )
    db.jobs.start_job(session=session, job_id=job.id, worker="w", now=at + timedelta(seconds=6))
    result = db.results.record_result(
        session=session,
        job_id=job.id,
        verdict=db.results.Verdict(
            probability=0.83 if suspected else 0.12,
            suspected=suspected,
            threshold=0.5,
            model_name="vit-ich",
            model_version="2.0.0",
            model_sha256="b" * 64,
            input_fingerprint=uid[-20:].rjust(64, "0"),
            precision="fp32",
            device="cpu",
            finding_scheme="SCT",
            finding_value="1386000",
            finding_meaning=finding[1],
            finding_name=finding[0],
        ),
        slice_scores=[(f"{uid}.1", 0.83 if suspected else 0.12)],
        now=at + timedelta(seconds=8),
        further_findings=further,
    )
    return job.id, result.id


def _export(
    session: Session,
    result_id: int,
    kind: ExportKind,
    *,
    sop: str,
    path: str,
    sent_at: datetime | None,
    dead_at: datetime | None = None,
) -> int:
    export = db.exports.ensure_export(
        session=session,
        result_id=result_id,
        kind=kind,
        destination="PACS",
        sop_instance_uid=sop,
        path=path,
    )
    if sent_at is not None:
        db.exports.mark_export_sent(session=session, export_id=export.id, now=sent_at)
    if dead_at is not None:
        db.exports.mark_export_failed(
            session=session,
            export_id=export.id,
            error="association: the PACS refused the connection (127.0.0.1:4242: connection "
            "refused); 5 attempts over 31 s; the report was not delivered and will not be "
            "tried again until an admin re-sends it",
            max_attempts=1,
            backoff_s=1,
            now=dead_at,
        )
    return export.id


def seed_cases(
    factory: SessionFactory, *, base: datetime, storage_dir: Path, reports_dir: Path
) -> Cases:
    """Store the cases, their stored files and the heat map, starting at ``base``."""
    u = {
        name: f"{ROOT}.{n}.1"
        for n, name in enumerate(
            ("not_delivered", "resent", "named", "other", "echo_sr", "echo_sc"), start=1
        )
    }
    named_study = f"{ROOT}.3.0"
    with factory() as session:
        # 1. The PACS was down: the SR and the SC died; the job is export_failed.
        _record(session, u["not_delivered"], at=base)
        job, result = _classified(session, u["not_delivered"], at=base)
        dead_sr = _export(
            session,
            result,
            ExportKind.SR,
            sop=f"{ROOT}.91.1",
            path="r/nd-sr.dcm",
            sent_at=None,
            dead_at=base + timedelta(seconds=40),
        )
        _export(
            session,
            result,
            ExportKind.SC,
            sop=f"{ROOT}.91.2",
            path="r/nd-sc.dcm",
            sent_at=None,
            dead_at=base + timedelta(seconds=41),
        )

        # 2. Reported 7 s after it was complete; the PACS sent the same instances again later.
        _record(session, u["resent"], at=base + timedelta(minutes=1))
        job, result = _classified(session, u["resent"], at=base + timedelta(minutes=1))
        sr_uid, sc_uid = f"{ROOT}.92.1", f"{ROOT}.92.2"
        _export(
            session,
            result,
            ExportKind.SR,
            sop=sr_uid,
            path="r/rs-sr.dcm",
            sent_at=base + timedelta(minutes=1, seconds=11),
        )
        _export(
            session,
            result,
            ExportKind.SC,
            sop=sc_uid,
            path="r/rs-sc.dcm",
            sent_at=base + timedelta(minutes=1, seconds=12),
        )
        db.jobs.finish_job(session=session, job_id=job, now=base + timedelta(minutes=1, seconds=12))
        _record(session, u["resent"], at=base + timedelta(minutes=9))  # re-routed: 438 s later
        # ... with our own SR and SC, each a series of its own, skipped as the listener does.
        for name, sop, modality, sop_class in (
            ("echo_sr", sr_uid, "SR", SR_STORAGE),
            ("echo_sc", sc_uid, "OT", SecondaryCaptureImageStorage),
        ):
            _record(
                session,
                u[name],
                at=base + timedelta(minutes=9),
                modality=modality,
                sop_uids=[sop],
                sop_class=sop_class,
                study=f"{u['resent']}.0",
            )
            db.receiving.skip_series(
                session=session, series_instance_uid=u[name], reason=f"modality {modality}"
            )

        # 3. Two patients with stored files; the first has a heat map of 512 pixels.
        _record(session, u["named"], at=base + timedelta(minutes=20), study=named_study)
        job, result = _classified(
            session, u["named"], at=base + timedelta(minutes=20), further=[SUBDURAL]
        )
        named_sc = _export(
            session,
            result,
            ExportKind.SC,
            sop=f"{ROOT}.93.2",
            path="sc-named.dcm",
            sent_at=base + timedelta(minutes=20, seconds=10),
        )
        _export(
            session,
            result,
            ExportKind.SR,
            sop=f"{ROOT}.93.1",
            path="sr-named.dcm",
            sent_at=base + timedelta(minutes=20, seconds=11),
        )
        db.jobs.finish_job(
            session=session, job_id=job, now=base + timedelta(minutes=20, seconds=11)
        )
        _record(session, u["other"], at=base + timedelta(minutes=30), ae="CT_SOUTH_AE")
        other_job, other_result = _classified(
            session, u["other"], at=base + timedelta(minutes=30), suspected=False
        )

        # 4. Notifications: one sent, one dead.
        sent = db.notifications.ensure_notification(
            session=session,
            job_id=job,
            result_id=result,
            event=NotificationEvent.SUSPECTED,
            event_key=f"result:{result}",
            destination="stroke-team",
            channel=NotificationChannel.WEBHOOK,
            idempotency_key=f"k-{result}",
            payload="{}",
            source_path=None,
        )
        db.notifications.mark_notification_sent(session=session, notification_id=sent.id)
        dead = db.notifications.ensure_notification(
            session=session,
            job_id=other_job,
            result_id=other_result,
            event=NotificationEvent.NOT_SUSPECTED,
            event_key=f"result:{other_result}",
            destination="stroke-team",
            channel=NotificationChannel.WEBHOOK,
            idempotency_key=f"k-{other_result}",
            payload="{}",
            source_path=None,
        )
        db.notifications.mark_notification_failed(
            session=session,
            notification_id=dead.id,
            error="http: 503 from the receiver",
            max_attempts=1,
            backoff_s=1,
        )
        session.commit()
    for name, patient, study in (
        ("named", PATIENT, named_study),
        ("other", OTHER_PATIENT, f"{u['other']}.0"),
    ):
        for n in range(1, 4):
            _header_file(
                storage_dir / u[name] / f"{n - 1}.dcm",
                sop_class=CTImageStorage,
                sop_uid=f"{u[name]}.{n}",
                study=study,
                series=u[name],
                patient=patient,
            )
    heat = np.zeros((512, 512, 3), dtype=np.uint8)
    heat[128:384, 128:384, 0] = 255
    _header_file(
        reports_dir / "sc-named.dcm",
        sop_class=SecondaryCaptureImageStorage,
        sop_uid=f"{ROOT}.93.2",
        study=named_study,
        series=f"{ROOT}.93.0",
        patient=PATIENT,
        pixels=heat,
    )
    return Cases(
        not_delivered=u["not_delivered"],
        not_delivered_dead_sr=dead_sr,
        resent=u["resent"],
        echo_sr=u["echo_sr"],
        echo_sc=u["echo_sc"],
        named=u["named"],
        named_study=named_study,
        named_sc_export=named_sc,
        other=u["other"],
        dead_notification=dead.id,
        sent_notification=sent.id,
    )


def seed_month(factory: SessionFactory, *, today: datetime, days: int = 30) -> int:
    """Three series a day for ``days`` days up to ``today``, one suspected; return how many."""
    count = 0
    with factory() as session:
        for day in range(days):
            for n in range(3):
                uid = f"{ROOT}.30.{day}.{n}"
                at = today - timedelta(days=day, hours=n)
                _record(session, uid, at=at)
                job, result = _classified(session, uid, at=at, suspected=n == 0)
                _export(
                    session,
                    result,
                    ExportKind.SR,
                    sop=f"{uid}.99",
                    path=f"r/{uid}.dcm",
                    sent_at=at + timedelta(seconds=12),
                )
                db.jobs.finish_job(session=session, job_id=job, now=at + timedelta(seconds=12))
                count += 1
        session.commit()
    return count
