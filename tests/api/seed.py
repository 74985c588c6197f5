"""Builds a small, known results database for the console tests (no DICOM files needed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import db.exports
import db.jobs
import db.receiving
import db.results
from db.engine import SessionFactory
from db.enums import ExportKind
from db.receiving import InstanceRecord

T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


@dataclass(frozen=True)
class Seeded:
    """Ids and UIDs of what :func:`seed` stored."""

    done_series: str
    failed_series: str
    skipped_series: str
    done_job: int
    failed_job: int
    dead_export: int
    sent_export: int


def _series(session: object, uid: str, *, at: datetime, ae: str, count: int = 3) -> None:
    db.receiving.record_instances(
        session=session,  # type: ignore[arg-type]
        study_instance_uid=uid.rsplit(".", 1)[0] + ".0",
        series_instance_uid=uid,
        modality="CT",
        series_description="HEAD",
        calling_ae_title=ae,
        instances=[
            InstanceRecord(
                sop_instance_uid=f"{uid}.{n}",
                sop_class_uid=CT_IMAGE_STORAGE,
                path=f"{uid}/{n}.dcm",
                transfer_syntax_uid=EXPLICIT_VR_LE,
                size_bytes=1000,
                received_at=at + timedelta(seconds=n),
            )
            for n in range(count)
        ],
    )


def seed(factory: SessionFactory, *, base: datetime = T0) -> Seeded:
    """Store a done suspected series (SR sent, SC dead), a failed job and a skipped series."""
    done, failed, skipped = (f"1.2.826.0.1.3680043.10.9.{n}.1" for n in (1, 2, 3))
    with factory() as session:
        _series(session, done, at=base, ae="SCANNER1")
        job = db.jobs.create_job(
            session=session, series_instance_uid=done, now=base + timedelta(seconds=5)
        )
        db.jobs.mark_job_queued(
            session=session, job_id=job.id, task_id="t1", now=base + timedelta(seconds=6)
        )
        db.jobs.start_job(
            session=session, job_id=job.id, worker="w", now=base + timedelta(seconds=7)
        )
        result = db.results.record_result(
            session=session,
            job_id=job.id,
            verdict=db.results.Verdict(
                probability=0.91,
                suspected=True,
                threshold=0.5,
                model_name="vit-stroke",
                model_version="1.0.0",
                model_sha256="a" * 64,
                input_fingerprint="f" * 64,
                precision="fp32",
                device="cpu",
            ),
            slice_scores=[(f"{done}.{n}", p) for n, p in enumerate((0.2, 0.95, 0.6))],
            now=base + timedelta(seconds=9),
        )
        sr = db.exports.ensure_export(
            session=session,
            result_id=result.id,
            kind=ExportKind.SR,
            destination="PACS",
            sop_instance_uid="1.2.3.4.1",
            path="reports/sr.dcm",
        )
        db.exports.mark_export_sent(
            session=session, export_id=sr.id, now=base + timedelta(seconds=10)
        )
        sc = db.exports.ensure_export(
            session=session,
            result_id=result.id,
            kind=ExportKind.SC,
            destination="PACS",
            sop_instance_uid="1.2.3.4.2",
            path="reports/sc.dcm",
        )
        db.exports.mark_export_failed(
            session=session,
            export_id=sc.id,
            error="refused",
            max_attempts=1,
            backoff_s=1,
            now=base + timedelta(seconds=11),
        )
        db.jobs.finish_job(session=session, job_id=job.id, now=base + timedelta(seconds=12))

        _series(session, failed, at=base + timedelta(minutes=1), ae="SCANNER2")
        bad = db.jobs.create_job(
            session=session, series_instance_uid=failed, now=base + timedelta(minutes=1, seconds=5)
        )
        db.jobs.start_job(
            session=session, job_id=bad.id, now=base + timedelta(minutes=1, seconds=6)
        )
        db.jobs.fail_job(
            session=session,
            job_id=bad.id,
            error="boom",
            final=True,
            now=base + timedelta(minutes=1, seconds=7),
        )

        _series(session, skipped, at=base + timedelta(minutes=2), ae="SCANNER1", count=1)
        db.receiving.skip_series(
            session=session, series_instance_uid=skipped, reason="too few slices"
        )
        session.commit()
        return Seeded(done, failed, skipped, job.id, bad.id, sc.id, sr.id)
