"""Builds a small, known results database for the console tests (no DICOM files needed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import db.exports
import db.jobs
import db.receiving
from db.engine import Session, SessionFactory
from db.enums import ExportKind
from tests.helpers import (
    SEED_TIME,
    record_head_ct_series,
    seed_export,
    seed_result,
    seed_verdict,
)

T0 = SEED_TIME


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


def _series(session: Session, uid: str, *, at: datetime, ae: str, count: int = 3) -> None:
    record_head_ct_series(
        session,
        series=uid,
        study=uid.rsplit(".", 1)[0] + ".0",
        numbers=range(count),
        at=at,
        spacing_s=1.0,
        calling_ae_title=ae,
        folder=uid,
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
        result = seed_result(
            session,
            job_id=job.id,
            verdict=seed_verdict(0.91),
            slice_scores=[(f"{done}.{n}", p) for n, p in enumerate((0.2, 0.95, 0.6))],
            now=base + timedelta(seconds=9),
        )
        sr = seed_export(session, result_id=result.id, sop_instance_uid="1.2.3.4.1")
        db.exports.mark_export_sent(
            session=session, export_id=sr.id, now=base + timedelta(seconds=10)
        )
        sc = seed_export(
            session,
            result_id=result.id,
            kind=ExportKind.SC,
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
