"""The worker's metrics port also answers /health and /ready for the hospital's monitoring."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db.engine import create_engine_for, make_session_factory, migrate
from tests.helpers import free_port
from worker.celery_app import create_celery_app, readiness_problems
from worker.config import WorkerConfig, WorkerRuntime
from worker.context import WorkerContext
from worker.metrics import serve_metrics


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    return status, json.loads(body)


def test_ready_names_each_problem_until_the_model_is_loaded(
    tmp_path: Path, checkpoint: Path, redis_url: str
) -> None:
    database = f"sqlite:///{tmp_path / 'triage.db'}"
    engine = create_engine_for(database)
    runtime = WorkerRuntime(
        storage_dir=tmp_path / "storage",
        reports_dir=tmp_path / "reports",
        database_url=database,
        broker_url=redis_url,
    )
    config = WorkerConfig(checkpoint=checkpoint, batch_size=4)
    app = create_celery_app(config, runtime)
    ctx = WorkerContext(config=config, runtime=runtime)
    port = free_port()
    stop = serve_metrics(
        host="127.0.0.1",
        port=port,
        sessions=make_session_factory(engine),
        problems=lambda: readiness_problems(ctx, app, engine),
    )
    assert stop is not None
    base = f"http://127.0.0.1:{port}"
    try:
        assert _get(f"{base}/health") == (200, {"status": "alive"})
        status, body = _get(f"{base}/ready")
        assert status == 503
        problems = body["problems"]
        assert isinstance(problems, list)
        assert "the model is not loaded yet" in problems
        assert any("schema" in str(problem) for problem in problems), problems

        migrate(engine)
        assert ctx.classifier.spec.input_size > 0  # loads the model, as the warm-up does
        status, body = _get(f"{base}/ready")
        assert (status, body) == (200, {"status": "ready"})

        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert b"stroke_triage_worker_jobs_total" in response.read()
    finally:
        stop()
        engine.dispose()


def test_ready_says_when_the_broker_is_down(tmp_path: Path, checkpoint: Path) -> None:
    database = f"sqlite:///{tmp_path / 'triage.db'}"
    engine = create_engine_for(database)
    migrate(engine)
    runtime = WorkerRuntime(
        storage_dir=tmp_path / "storage",
        reports_dir=tmp_path / "reports",
        database_url=database,
        broker_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
    )
    config = WorkerConfig(checkpoint=checkpoint, batch_size=4)
    ctx = WorkerContext(config=config, runtime=runtime)
    assert ctx.classifier is not None
    problems = readiness_problems(ctx, create_celery_app(config, runtime), engine)
    engine.dispose()
    assert len(problems) == 1 and problems[0].startswith("the broker is not reachable"), problems


def test_a_prefork_worker_on_the_folder_queue_is_refused_with_what_to_do(
    tmp_path: Path, checkpoint: Path
) -> None:
    env = {
        **os.environ,
        "STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"),
        "STROKE_TRIAGE_WORKER__CHECKPOINT": str(checkpoint),
        "STROKE_TRIAGE_WORKER__CONCURRENCY": "2",
    }
    env.pop("STROKE_TRIAGE_BROKER_URL", None)
    for command in ("work", "up"):
        done = subprocess.run(
            [sys.executable, "-m", "stroke_triage", command],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        for words in ("worker.concurrency is 2", "STROKE_TRIAGE_BROKER_URL", "per core"):
            assert words in done.stderr, done.stderr
        assert not (tmp_path / "data").exists()


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@dataclass(frozen=True)
class PreforkWorker:
    """``stroke-triage work`` with two pool children, its metrics port and its log."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def ready(self, want: int) -> dict[str, Any]:
        """Wait until /ready answers ``want``; its body."""
        deadline = time.monotonic() + 120
        answer: tuple[int, dict[str, Any]] = (0, {})
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                answer = _get(f"http://127.0.0.1:{self.port}/ready")
            except OSError:  # not listening yet
                answer = (0, {})
            if answer[0] == want:
                return answer[1]
            time.sleep(0.5)
        raise AssertionError(f"/ready never answered {want}: {answer}\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text()[-3000:]


@contextmanager
def prefork_worker(tmp_path: Path, checkpoint: Path, redis_url: str) -> Iterator[PreforkWorker]:
    """A worker with two pool children on Redis (prefork is refused on the folder queue), on a
    queue of its own; stopped (SIGTERM) after the block, and killed with its children if it
    hangs."""
    port = free_port()
    env = {
        **os.environ,
        "STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"),
        "STROKE_TRIAGE_BROKER_URL": redis_url,
        "STROKE_TRIAGE_TASK_QUEUE": f"probes-{uuid.uuid4().hex}",
        "STROKE_TRIAGE_WORKER__CHECKPOINT": str(checkpoint),
        "STROKE_TRIAGE_WORKER__CONCURRENCY": "2",
        "STROKE_TRIAGE_WORKER__METRICS_PORT": str(port),
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "stroke_triage", "work"], env=env, stdout=output, stderr=output
        )
        try:
            yield PreforkWorker(process, port, log)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:  # end this test's own worker and children
                    for child in _children(process.pid):
                        os.kill(child, signal.SIGKILL)
                    process.kill()
                    process.wait(timeout=20)


def test_a_prefork_worker_becomes_ready_once_its_children_have_their_models(
    tmp_path: Path, checkpoint: Path, redis_url: str
) -> None:
    # The parent answers /ready but loads no model; its forked children do, after the parent
    # has checked the checkpoint with torch (their first op used to wait forever for it).
    with prefork_worker(tmp_path, checkpoint, redis_url) as worker:
        assert worker.ready(200) == {"status": "ready"}


def test_a_prefork_worker_whose_children_lost_their_models_is_not_ready(
    tmp_path: Path, checkpoint: Path, redis_url: str
) -> None:
    """The children that loaded a model die, and their replacements cannot load one (the
    checkpoint was damaged since): /ready must say so, not count the dead children; and the
    worker still stops on SIGTERM (on the folder queue, a child killed while idle left the pool
    waiting forever, which is why prefork is refused there)."""
    weights = tmp_path / "ckpt"
    shutil.copytree(checkpoint, weights)
    with prefork_worker(tmp_path, weights, redis_url) as worker:
        worker.ready(200)
        for path in weights.glob("*.safetensors"):
            path.write_bytes(b"damaged")
        for child in _children(worker.process.pid):
            os.kill(child, signal.SIGKILL)
        body = worker.ready(503)
        assert "the model is not loaded yet" in json.dumps(body), body
        worker.process.terminate()
        assert worker.process.wait(timeout=60) == 0, worker.tail()
