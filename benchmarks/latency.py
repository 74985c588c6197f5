"""End-to-end latency: last CT instance stored by the listener -> SR in Orthanc, and -> webhook.

Starts Orthanc (the PACS), a local HTTP webhook receiver and `stroke-triage up` on free ports,
CPU only (``CUDA_VISIBLE_DEVICES`` empty), with the shipped checkpoint unless told otherwise;
sends a series with DCMTK's storescu (by default the synthetic head phantom, 40 slices of
512 x 512; fresh UIDs each run, so every run really infers), polls Orthanc's REST API for the
SR, waits for the webhook notification, and breaks the time down by stage from the database
timestamps, with an SR and a webhook column (issue 15: the notification must arrive within 1 s
of the SR). Prints the quiet period used, the load average at the start and at the end, the
median of ``--runs`` runs and issue 25's goal (quiet period + 1.5 s). Every DCMTK end
(storescu, echoscu, Orthanc) gets ``TCP_NODELAY=1``.

    .venv/bin/python benchmarks/latency.py [--runs 3] [--quiet-period 2.0] [--slices 40]
        [--checkpoint DIR | --random-checkpoint] [--series DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import db.jobs  # noqa: E402
from db.engine import create_engine_for, make_session_factory  # noqa: E402
from db.models import Instance, Series  # noqa: E402

PROFILED_SERVICE = """
import cProfile, runpy, sys
import worker.tasks
profile, run, path = cProfile.Profile(), worker.tasks.process_series, sys.argv[1]
def profiled(*args, **kwargs):
    try:
        return profile.runcall(run, *args, **kwargs)
    finally:
        profile.dump_stats(path)
worker.tasks.process_series = profiled
sys.argv = ["stroke_triage", "up"]
runpy.run_module("stroke_triage", run_name="__main__")
"""
"""`stroke-triage up` with every job's pipeline under cProfile (written after each job)."""


#: Every DCMTK end (storescu, echoscu, Orthanc) without Nagle's algorithm (see
#: benchmarks/listener_throughput.py).
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
SHIPPED_CHECKPOINT = REPO / "model" / "weights"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def orthanc_post(port: int, path: str, body: Any) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def fresh_copy(files: list[Path], folder: Path) -> tuple[list[Path], str]:
    """The series with new study, series and instance UIDs."""
    study, series = generate_uid(), generate_uid()
    out = []
    for path in files:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        target = folder / path.name
        ds.save_as(target)
        out.append(target)
    return out, study


class WebhookReceiver:
    """A plain-HTTP webhook endpoint on 127.0.0.1 that records when each series is told."""

    def __init__(self) -> None:
        self.arrived: dict[str, datetime] = {}
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                now = datetime.now(UTC)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.end_headers()
                with receiver.changed:
                    receiver.arrived.setdefault(str(body["series_instance_uid"]), now)
                    receiver.changed.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, series_instance_uid: str, timeout_s: float = 60.0) -> datetime:
        with self.changed:
            if not self.changed.wait_for(
                lambda: series_instance_uid in self.arrived, timeout=timeout_s
            ):
                raise TimeoutError(f"no webhook for series {series_instance_uid}")
            return self.arrived[series_instance_uid]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--warm-up",
        type=int,
        default=1,
        help="series sent and waited for first, not counted (a service runs warm)",
    )
    parser.add_argument("--quiet-period", type=float, default=2.0)
    parser.add_argument(
        "--checkpoint", type=Path, default=SHIPPED_CHECKPOINT, help="default: the shipped one"
    )
    parser.add_argument(
        "--random-checkpoint",
        action="store_true",
        help="a tiny random ViT instead (the test checkpoint; for the pipeline without the model)",
    )
    parser.add_argument(
        "--slices", type=int, default=40, help="slices of the synthetic head phantom (512 x 512)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="write a cProfile of the service's main thread (the solo worker) to this file",
    )
    parser.add_argument(
        "--series",
        type=Path,
        default=None,
        help="send this folder's .dcm files instead of the phantom (e.g. ../shared/data/dicom/"
        "ge-head-ct, 28 slices)",
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="latency-"))
    if args.series is not None:
        files = sorted(args.series.glob("*.dcm"))
        source = f"{args.series} ({len(files)} slices)"
    else:
        from model.phantom import write_phantom_series

        files = sorted(write_phantom_series(work / "phantom", n_slices=args.slices, size=512))
        source = f"the synthetic head phantom ({len(files)} slices of 512 x 512)"
    http_port, dicom_port, listener_port = free_port(), free_port(), free_port()
    (work / "orthanc").mkdir()
    config = {
        "StorageDirectory": str(work / "orthanc"),
        "IndexDirectory": str(work / "orthanc"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    checkpoint = args.checkpoint
    if args.random_checkpoint:
        from model.checkpoint import create_random_checkpoint

        checkpoint = create_random_checkpoint(work / "ckpt")
    print(
        f"Series: {source}; checkpoint {checkpoint}; quiet period {args.quiet_period} s; "
        f"CPU only; load average {load_at_start[0]:.2f} at the start, on {os.cpu_count()} CPUs",
        flush=True,
    )
    webhook = WebhookReceiver()
    hook: dict[str, Any] = {
        "kind": "webhook",
        "name": "bench",
        "url": webhook.url,
        "secret": "benchmark",
        "allow_plain_http": True,  # a receiver on 127.0.0.1, inside this benchmark
    }
    hook["on"] = ["suspected", "not_suspected"]  # every verdict, whatever the model says
    env = {k: v for k, v in os.environ.items() if not k.startswith("STROKE_TRIAGE_")}
    env.update(
        {
            "CUDA_VISIBLE_DEVICES": "",  # CPU only, whatever the machine has
            "STROKE_TRIAGE_DATA_DIR": str(work / "data"),
            "STROKE_TRIAGE_LISTENER__HOST": "127.0.0.1",
            "STROKE_TRIAGE_LISTENER__PORT": str(listener_port),
            "STROKE_TRIAGE_API__PORT": str(free_port()),  # a taken console port stops `up`
            "STROKE_TRIAGE_LISTENER__QUIET_PERIOD_S": str(args.quiet_period),
            "STROKE_TRIAGE_WORKER__CHECKPOINT": str(checkpoint),
            "STROKE_TRIAGE_WORKER__PACS": json.dumps(
                [{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": dicom_port}]
            ),
            "STROKE_TRIAGE_WORKER__NOTIFICATIONS": json.dumps([hook]),
            "STROKE_TRIAGE_LOG_LEVEL": "WARNING",
        }
    )
    orthanc = subprocess.Popen(
        [shutil.which("Orthanc") or "Orthanc", str(work / "orthanc.json")],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    command = ["-m", "stroke_triage", "up"]
    if args.profile:
        command = ["-c", PROFILED_SERVICE, str(args.profile.resolve())]
    service = subprocess.Popen(
        [sys.executable, *command],
        env=env,
        stdout=(work / "up.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    rows: list[dict[str, float]] = []
    hooks: list[dict[str, float]] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            echo = subprocess.run(
                ["echoscu", "-aec", "STROKETRIAGE", "127.0.0.1", str(listener_port)],
                capture_output=True,
                check=False,
                env=DCMTK_ENV,
            )
            if echo.returncode == 0:
                break
            time.sleep(0.3)
        time.sleep(3.0)  # let the worker load the model (warm_up) before the first series
        engine = create_engine_for(f"sqlite:///{work / 'data' / 'stroke-triage.db'}")
        sessions = make_session_factory(engine)
        for run in range(-args.warm_up, args.runs):
            folder = work / f"run{run}"
            folder.mkdir()
            copy, study_uid = fresh_copy(files, folder)
            subprocess.run(
                [
                    "storescu",
                    "-aec",
                    "STROKETRIAGE",
                    "127.0.0.1",
                    str(listener_port),
                    *map(str, copy),
                ],
                check=True,
                capture_output=True,
                env=DCMTK_ENV,
            )
            sent = datetime.now(UTC)
            arrived = None
            while arrived is None:
                query = {
                    "Level": "Series",
                    "Query": {"StudyInstanceUID": study_uid, "Modality": "SR"},
                }
                if orthanc_post(http_port, "/tools/find", query):
                    arrived = datetime.now(UTC)
                else:
                    time.sleep(0.02)
            series_uid = str(pydicom.dcmread(copy[0]).SeriesInstanceUID)
            told = webhook.wait_for(series_uid)
            time.sleep(0.5)
            with sessions() as session:
                series_id, last = session.execute(
                    select(Series.id, func.max(Instance.received_at))
                    .join(Instance, Instance.series_id == Series.id)
                    .where(Series.series_instance_uid == pydicom.dcmread(copy[0]).SeriesInstanceUID)
                    .group_by(Series.id)
                ).one()
                (job,) = [j for j in db.jobs.list_jobs(session=session) if j.series_id == series_id]
                last = last.replace(tzinfo=UTC) if last.tzinfo is None else last
                stages = [
                    last,
                    job.completed_at,
                    job.queued_at,
                    job.started_at,
                    job.inferred_at,
                    job.exported_at,
                    arrived,
                ]
                names = [
                    "quiet period",
                    "complete->queued",
                    "queued->started",
                    "started->inferred",
                    "inferred->exported",
                    "exported->visible",
                ]
                times = [t for t in stages if t is not None]
                assert len(times) == len(stages), f"a stage of job {job.id} has no timestamp"
                row = {
                    n: (b - a).total_seconds()
                    for n, a, b in zip(names, times[:-1], times[1:], strict=True)
                }
                row["total"] = (arrived - last).total_seconds()
                row["storescu done->visible"] = (arrived - sent).total_seconds()
                inferred = times[4]  # job.inferred_at, known to be set
                hook = {
                    "inferred->delivered": (told - inferred).total_seconds(),
                    "total": (told - last).total_seconds(),
                }
                row["inferred->delivered"] = (arrived - inferred).total_seconds()
                if run >= 0:
                    rows.append(row)
                    hooks.append(hook)
                label = f"run {run + 1}" if run >= 0 else "warm-up (not counted)"
                print(
                    f"{label}: "
                    + ", ".join(f"{k} {v:.2f} s" for k, v in row.items())
                    + f"; webhook total {hook['total']:.2f} s",
                    flush=True,
                )
        engine.dispose()
    finally:
        service.terminate()
        orthanc.terminate()
        service.wait(30)
        orthanc.wait(30)
    goal = args.quiet_period + 1.5
    total = statistics.median(r["total"] for r in rows)
    print(
        f"\nmedian of {len(rows)} runs, {source}, quiet period {args.quiet_period} s, CPU only: "
        f"last slice -> SR in Orthanc {total:.2f} s; goal <= quiet period + 1.5 s = {goal:.1f} s "
        f"(issues 16, 25): {'met' if total <= goal else 'NOT met'}"
    )
    shared_stages = ["quiet period", "complete->queued", "queued->started", "started->inferred"]
    print("| stage | SR (s) | webhook (s) |\n| --- | --- | --- |")
    for key in rows[0]:
        sr = statistics.median(r[key] for r in rows)
        if key in hooks[0]:
            cell = f"{statistics.median(h[key] for h in hooks):.2f}"
        else:
            cell = f"{sr:.2f}" if key in shared_stages else "-"
        print(f"| {key} | {sr:.2f} | {cell} |")
    gaps = [h["total"] - r["total"] for h, r in zip(hooks, rows, strict=True)]
    difference, worst = statistics.median(gaps), max(gaps)
    print(f"| webhook - SR | | {difference:+.2f} (worst {worst:+.2f}; goal <= 1.00) |")
    load = os.getloadavg()
    print(
        f"load average: {load_at_start[0]:.2f} at the start, {load[0]:.2f} at the end "
        f"(5 and 15 min: {load[1]:.2f} {load[2]:.2f}) on {os.cpu_count()} CPUs"
    )
    if args.profile:
        print(f"profile: {args.profile}; service log: {work / 'up.log'}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
