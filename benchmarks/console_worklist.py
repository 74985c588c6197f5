"""The console's worklist on a site-sized SQLite database: queries and pages, side by side.

Records ``--series`` classified series (one stored file each, with a patient, an accession and a
station), then prints, as medians of ``--runs``:

- the series list query joined to each series' newest job in two ways: ``IN`` over every
  series' newest job (the console's form before issue 24) and a correlated lookup (now);
- the first worklist page after start-up (it indexes the series for search, 500 a request);
- worklist pages of 25, 50 and 200 rows (the patient's name and ID read from each row's file);
- a search by a patient's name and by an accession number.

    .venv/bin/python benchmarks/console_worklist.py [--series 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian  # noqa: E402
from sqlalchemy import Select, func, select  # noqa: E402
from sqlalchemy.orm import aliased  # noqa: E402

import db.jobs  # noqa: E402
import db.receiving  # noqa: E402
import db.results  # noqa: E402
import db.tokens  # noqa: E402
from console.app import create_app  # noqa: E402
from console.config import ApiConfig  # noqa: E402
from console.tokens import new_token, token_sha256  # noqa: E402
from db.engine import (  # noqa: E402
    Session,
    SessionFactory,
    create_engine_for,
    make_session_factory,
    migrate,
)
from db.enums import TokenScope  # noqa: E402
from db.models import Job, Series  # noqa: E402
from model.spec import STROKE  # noqa: E402
from stroke_triage.settings import Settings  # noqa: E402

ROOT = "1.2.826.0.1.3680043.10.77"


def median_ms(action: Callable[[], object], runs: int) -> float:
    """The median wall time of ``action`` in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def write_header(path: Path, uid: str, n: int) -> None:
    """A stored CT file's header: patient, accession, station (no pixels: none are read)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(f"{uid}.1")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, f"{uid}.1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{uid}.0", uid
    ds.PatientName, ds.PatientID, ds.AccessionNumber = f"Name{n}^Given", f"PID{n}", f"ACC{n}"
    ds.StationName, ds.Modality = "CT1", "CT"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def fill(sessions: SessionFactory, storage: Path, count: int) -> None:
    """``count`` series, each classified, with one stored file."""
    base = datetime.now(UTC) - timedelta(days=5)
    with sessions() as session:
        for n in range(count):
            uid, at = f"{ROOT}.{n}", base + timedelta(minutes=n)
            db.receiving.record_instances(
                session=session,
                study_instance_uid=f"{uid}.0",
                series_instance_uid=uid,
                modality="CT",
                series_description="HEAD",
                calling_ae_title="ORTHANC",
                instances=[
                    db.receiving.InstanceRecord(
                        f"{uid}.1", CTImageStorage, f"{uid}/0.dcm", ExplicitVRLittleEndian, 1, at
                    )
                ],
            )
            job = db.jobs.create_job(session=session, series_instance_uid=uid, now=at)
            db.jobs.start_job(session=session, job_id=job.id, worker="w", now=at)
            db.results.record_result(
                session=session,
                job_id=job.id,
                verdict=db.results.Verdict(
                    probability=0.7,
                    suspected=n % 3 == 0,
                    threshold=0.5,
                    model_name="bench",
                    model_version="1",
                    model_sha256="0" * 64,
                    input_fingerprint=f"{n:064d}",
                    precision="fp32",
                    device="cpu",
                    finding_scheme=STROKE.scheme,
                    finding_value=STROKE.value,
                    finding_meaning=STROKE.meaning,
                    finding_name=STROKE.short_name,
                ),
                slice_scores=[(f"{uid}.1", 0.7)],
                now=at,
            )
        session.commit()
    for n in range(count):
        write_header(storage / f"{ROOT}.{n}" / "0.dcm", f"{ROOT}.{n}", n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        url = f"sqlite:///{work / 'bench.db'}"
        migrate(url)
        engine = create_engine_for(url)
        sessions = make_session_factory(engine)
        settings = Settings(
            data_dir=work / "data",
            database_url=url,
            broker_url="memory://",
            api=ApiConfig(refresh_s=0),
        )
        fill(sessions, settings.storage_dir, args.series)
        print(f"{args.series} series on SQLite; load average {os.getloadavg()[0]:.2f}")

        newer = aliased(Job)
        newest = select(func.max(newer.id)).where(newer.series_id == Series.id)
        forms = {
            "IN (every newest job)": Job.id.in_(select(func.max(Job.id)).group_by(Job.series_id)),
            "correlated lookup": Job.id == newest.correlate(Series).scalar_subquery(),
        }
        timings = {}
        for name, current in forms.items():
            statement = (
                select(Series.id, Job.id)
                .outerjoin(Job, (Job.series_id == Series.id) & current)
                .order_by(Series.last_received_at.desc())
                .limit(50)
            )
            with sessions() as session:

                def rows(
                    session: Session = session, statement: Select[int, int] = statement
                ) -> object:
                    return session.execute(statement).all()

                timings[name] = median_ms(rows, args.runs)
        before, after = timings.values()
        for name, ms in timings.items():
            print(f"series list, newest job by {name:24s} {ms:8.1f} ms")
        print(f"  ratio {before / after:.0f}x")

        token = new_token()
        with sessions() as session:
            db.tokens.create_token(
                session=session,
                name="bench",
                scope=TokenScope.ADMIN,
                token_sha256=token_sha256(token),
            )
            session.commit()
        with TestClient(create_app(settings.console_runtime())) as client:
            client.post("/login", data={"token": token})
            first = median_ms(lambda: client.get("/"), 1)
            print(f"first worklist (indexes 500 series)     {first:8.1f} ms")
            while client.get("/").status_code == 200 and _unindexed(client):
                pass
            for size in (25, 50, 200):
                ms = median_ms(functools.partial(client.get, f"/?size={size}"), args.runs)
                print(f"worklist page of {size:3d} rows                 {ms:8.1f} ms")
            ms = median_ms(lambda: client.get(f"/?q=Name{args.series // 2}"), args.runs)
            print(f"search by a patient's name               {ms:8.1f} ms")
            ms = median_ms(lambda: client.get(f"/?q=ACC{args.series // 3}"), args.runs)
            print(f"search by an accession number            {ms:8.1f} ms")
        engine.dispose()
    return 0


def _unindexed(client: TestClient) -> bool:
    """Whether a series is still to be indexed (the console indexes 500 a request)."""
    import db.search_index

    state = client.app.state.console  # type: ignore[attr-defined]
    with state.sessions() as session:
        return bool(
            db.search_index.unindexed(session=session, key_id=state.search_key.key_id, limit=1)
        )


if __name__ == "__main__":
    raise SystemExit(main())
