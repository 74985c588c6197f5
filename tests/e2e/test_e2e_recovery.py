"""Lost work comes back: a worker killed mid-inference, a broker restarted without persistence.

The database is the source of truth for jobs in flight (issue 11): a queued job holds a lease,
a running job's worker renews its lease, and the listener's reconciler publishes every job
whose lease expired. These tests use short leases; the defaults are in the README ("Recovery").
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import redis

import db.jobs
import db.results
from db.engine import SessionFactory, create_engine_for, make_session_factory
from db.enums import JobStatus
from db.rows import Job
from dicom_edge.peers import echo
from model.checkpoint import random_spec, save_checkpoint
from model.network import build_network
from model.phantom import write_phantom_series
from tests.e2e.helpers import LISTENER_AE, PacsStub, Service, storescu
from tests.helpers import free_port, require_tool

pytestmark = pytest.mark.slow

LEASE_S = 4.0
"""The running job's lease in these tests (default 30 s)."""
QUEUED_LEASE_S = 3.0
"""The queued job's lease in these tests (default 45 s)."""


@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random ViT-Small-sized checkpoint: slow enough on CPU to kill its worker mid-inference.

    A real series would do the same; this keeps the test's data small.
    """
    spec = random_spec().model_copy(
        update={
            "input_size": 224,
            "model_kwargs": {"embed_dim": 384, "depth": 12, "num_heads": 6},
        }
    )
    return save_checkpoint(tmp_path_factory.mktemp("slow") / "ckpt", build_network(spec), spec)


@pytest.fixture
def recovery_env(service: Service, slow_checkpoint: Path) -> Service:
    """The service fixture with the slow checkpoint and short leases."""
    service.env.update(
        {
            "STROKE_TRIAGE_WORKER__CHECKPOINT": str(slow_checkpoint),
            "STROKE_TRIAGE_WORKER__DEVICE": "cpu",
            "STROKE_TRIAGE_WORKER__BATCH_SIZE": "4",
            "STROKE_TRIAGE_WORKER__JOB_LEASE_S": str(LEASE_S),
            "STROKE_TRIAGE_WORKER__JOB_HEARTBEAT_INTERVAL_S": "1",
            "STROKE_TRIAGE_LISTENER__RECONCILE_INTERVAL_S": "1",
            "STROKE_TRIAGE_LISTENER__QUEUED_LEASE_S": str(QUEUED_LEASE_S),
            "STROKE_TRIAGE_LISTENER__QUIET_PERIOD_S": "1",
            # One receiving process: each (re)start of `up` spawns one process less.
            "STROKE_TRIAGE_LISTENER__PROCESSES": "1",
        }
    )
    return service


class PrivateRedis:
    """A redis-server of this test only, without persistence: killing it loses its queues."""

    def __init__(self) -> None:
        self.binary = require_tool("redis-server", "redis-server")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise AssertionError(f"the private redis-server on port {self.port} never answered")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=20)
            self.process = None

    def queued_messages(self) -> int:
        client = redis.Redis(port=self.port)
        return sum(int(client.llen(key)) for key in client.keys("test-*"))


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.kill()


def _series(folder: Path, seed: int, n_slices: int = 24) -> tuple[list[Path], str]:
    files = write_phantom_series(folder, n_slices=n_slices, size=128, seed=seed)
    return files, str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def _job_of(sessions: SessionFactory, series_uid: str) -> Job | None:
    with sessions() as session:
        jobs = [
            job
            for job in db.jobs.list_jobs(session=session)
            if job.series.series_instance_uid == series_uid
        ]
        return jobs[0] if jobs else None


def _results(sessions: SessionFactory) -> int:
    with sessions() as session:
        return len(db.results.list_results(session=session))


def _kill_mid_inference(
    worker: subprocess.Popen[bytes], sessions: SessionFactory, series_uid: str, service: Service
) -> None:
    """SIGKILL the worker once it has started the job and before it stores a result."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = _job_of(sessions, series_uid)
        if job is not None and job.status == JobStatus.STARTED and job.attempts == 1:
            # The model needs seconds for this series (ViT-S, 12 blocks, 24 slices, 224 px), even
            # warmed up; half a second in, the series is being read or inferred.
            time.sleep(0.5)
            worker.kill()
            worker.wait(timeout=20)
            killed = _job_of(sessions, series_uid)
            assert killed is not None and killed.status == JobStatus.STARTED, (
                f"the worker stored its result before it was killed:\n{service.logs()}"
            )
            return
        time.sleep(0.05)
    raise AssertionError(f"the job never started:\n{service.logs()}")


def _wait_listening(process: subprocess.Popen[bytes], port: int, service: Service) -> None:
    """Like ``Service.wait_listening``, for a restarted service (the killed one stays dead)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the restarted service exited:\n{service.logs()}"
        if echo(host="127.0.0.1", port=port, called_ae_title=LISTENER_AE, timeout_s=2):
            return
        time.sleep(0.3)
    raise AssertionError(f"the restarted listener never answered C-ECHO:\n{service.logs()}")


def _wait_for_worker(service: Service, count: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = sum(
            "Export sweeper started" in log.read_text(errors="replace")
            for _, log in service.processes
        )
        if found >= count:
            return
        time.sleep(0.3)
    raise AssertionError(f"{count} workers never became ready:\n{service.logs()}")


def _assert_one_result_and_one_sr(
    sessions: SessionFactory,
    test_pacs: PacsStub,
    series_uid: str,
    service: Service,
    *,
    within_s: float,
    settle: bool = True,
) -> Job:
    try:
        test_pacs.wait_for(1, timeout_s=within_s)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{service.logs()}") from exc
    deadline = time.monotonic() + 20
    job = _job_of(sessions, series_uid)
    while time.monotonic() < deadline and (job is None or job.status != JobStatus.DONE):
        time.sleep(0.2)
        job = _job_of(sessions, series_uid)
    if settle:
        time.sleep(2 * LEASE_S)  # a second copy of the job would have run by now
    assert job is not None and job.status == JobStatus.DONE, service.logs()
    assert len(list(test_pacs.folder.glob("*.dcm"))) == 1
    assert _results(sessions) == 1
    return job


def test_a_worker_killed_mid_inference_on_the_folder_queue_is_recovered(
    recovery_env: Service, test_pacs: PacsStub, tmp_path: Path
) -> None:
    service = recovery_env
    port = int(service.env["STROKE_TRIAGE_LISTENER__PORT"])
    first = service.start("up")
    service.wait_listening(port)
    _wait_for_worker(service, 1)
    engine = create_engine_for(f"sqlite:///{tmp_path / 'data' / 'stroke-triage.db'}")
    sessions = make_session_factory(engine)
    try:
        files, series_uid = _series(tmp_path / "series", seed=1)
        storescu(files, port)
        _kill_mid_inference(first, sessions, series_uid, service)
        assert _results(sessions) == 0

        killed_at = time.monotonic()
        _wait_listening(service.start("up"), port, service)
        job = _assert_one_result_and_one_sr(
            sessions, test_pacs, series_uid, service, within_s=LEASE_S + 90
        )
        assert job.attempts == 2, service.logs()
        print(f"recovered {time.monotonic() - killed_at:.1f} s after the kill (start-up included)")
    finally:
        engine.dispose()


def test_lost_jobs_come_back_after_a_redis_restart_and_a_killed_worker(
    postgres_schema_url: str,  # first: dropped after the services have stopped
    recovery_env: Service,
    test_pacs: PacsStub,
    private_redis: PrivateRedis,
    tmp_path: Path,
) -> None:
    service = recovery_env
    service.env["STROKE_TRIAGE_DATABASE_URL"] = postgres_schema_url
    service.env["STROKE_TRIAGE_BROKER_URL"] = private_redis.url
    port = int(service.env["STROKE_TRIAGE_LISTENER__PORT"])
    service.start("listen")
    service.wait_listening(port)
    engine = create_engine_for(postgres_schema_url)
    sessions = make_session_factory(engine)
    try:
        # 1. A job queued on a Redis without persistence; Redis dies and comes back empty.
        files, queued_uid = _series(tmp_path / "queued", seed=2, n_slices=8)
        storescu(files, port)
        deadline = time.monotonic() + 60
        while (job := _job_of(sessions, queued_uid)) is None or job.status != JobStatus.QUEUED:
            assert time.monotonic() < deadline, service.logs()
            time.sleep(0.1)
        assert private_redis.queued_messages() == 1
        private_redis.kill()
        private_redis.start()
        assert private_redis.queued_messages() == 0

        worker = service.start("work")
        _wait_for_worker(service, 1)
        # No settling here: a second copy of this job would add a result and an SR, which the
        # checks at the end (after phase 2 and its own wait of two leases) would find.
        queued_job = _assert_one_result_and_one_sr(
            sessions, test_pacs, queued_uid, service, within_s=QUEUED_LEASE_S + 60, settle=False
        )
        for report in test_pacs.folder.glob("*.dcm"):
            report.rename(report.with_suffix(".first"))

        # 2. A worker killed mid-inference: the task is unacknowledged on Redis (it would come
        # back only after the visibility timeout, an hour); the lease brings it back.
        files, started_uid = _series(tmp_path / "started", seed=3)
        storescu(files, port)
        _kill_mid_inference(worker, sessions, started_uid, service)
        killed_at = time.monotonic()
        assert _results(sessions) == 1
        service.start("work")
        try:
            test_pacs.wait_for(1, timeout_s=LEASE_S + 90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{service.logs()}") from exc
        deadline = time.monotonic() + 20
        while (job := _job_of(sessions, started_uid)) is None or job.status != JobStatus.DONE:
            assert time.monotonic() < deadline, service.logs()
            time.sleep(0.2)
        time.sleep(2 * LEASE_S)
        assert len(list(test_pacs.folder.glob("*.dcm"))) == 1
        assert _results(sessions) == 2
        assert job.attempts == 2, service.logs()
        again = _job_of(sessions, queued_uid)
        assert again is not None and again.status == JobStatus.DONE, service.logs()
        assert again.attempts == queued_job.attempts, service.logs()
        print(f"recovered {time.monotonic() - killed_at:.1f} s after the kill (start-up included)")
    finally:
        engine.dispose()
