"""Start-up: commands that need no model never import torch; `up` answers before the model loads;
one service per data folder and port, refused with a clear message otherwise."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_edge.peers import echo
from stroke_triage.data_lock import DataDirLock, DataDirLockedError
from tests.helpers import REPO_ROOT, free_port, run_cli

HEAVY = ("torch", "timm", "torchvision")
#: What a read-only command never needs (issue 17): the queue, migrations, the DICOM network
#: and pydicom. Each costs 0.1-0.4 s of import, and together they were most of `jobs`' 3-4 s.
NOT_READ_ONLY = ("celery", "kombu", "alembic", "pynetdicom", "pydicom")

#: Runs one CLI command in-process, then prints the heavy and the not-read-only packages it
#: loaded (top-level names).
COMMAND_PROBE = """
import json, sys
from stroke_triage.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
print("HEAVY " + json.dumps(heavy))
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(NOT_READ_ONLY))
print("NOT_READ_ONLY " + json.dumps(loaded))
sys.exit(code or 0)
""".replace("HEAVY)", f"{HEAVY!r})").replace("set(NOT_READ_ONLY)", f"set({NOT_READ_ONLY!r})")

#: Runs `listen` in the main thread (as the CLI does); a second thread sends C-ECHO until it is
#: answered, then prints the heavy modules the listening process holds at that moment.
LISTEN_PROBE = """
import json, os, sys, threading, time

def probe():
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification
    port = int(os.environ["STROKE_TRIAGE_LISTENER__PORT"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ae = AE(ae_title="PROBE")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="STROKETRIAGE")
        if assoc.is_established:
            status = assoc.send_c_echo()
            assoc.release()
            if status and status.Status == 0:
                heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
                print("HEAVY " + json.dumps(heavy), flush=True)
                os._exit(0)
        time.sleep(0.05)
    print("NO ECHO", flush=True)
    os._exit(1)

from stroke_triage.cli import main  # before the thread: imports are not thread-safe here

threading.Thread(target=probe, daemon=True).start()
sys.exit(main(["listen"]))
""".replace("HEAVY)", f"{HEAVY!r})")


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STROKE_TRIAGE_")}
    env.update(
        {
            "STROKE_TRIAGE_DATA_DIR": str(data_dir),
            "STROKE_TRIAGE_LISTENER__HOST": "127.0.0.1",
            "STROKE_TRIAGE_LISTENER__PORT": str(free_port()),
            # A port of its own: a taken console port stops `up` (exit 2).
            "STROKE_TRIAGE_API__PORT": str(free_port()),
            "STROKE_TRIAGE_LOG_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


def _heavy_modules(output: str, prefix: str = "HEAVY ") -> list[str]:
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    assert lines, output
    loaded: list[str] = json.loads(lines[-1].removeprefix(prefix))
    return loaded


@pytest.fixture(scope="module")
def migrated_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("startup") / "data"
    done = run_cli(["migrate"], {"STROKE_TRIAGE_DATA_DIR": str(data)})
    assert done.returncode == 0, done.stderr
    return data


@pytest.mark.parametrize(
    "command", [["--help"], ["settings"], ["results"], ["jobs"], ["exports"], ["notifications"]]
)
def test_read_only_commands_import_no_torch_queue_migrations_or_dicom(
    migrated_data_dir: Path, command: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", COMMAND_PROBE, *command],
        env=_env(migrated_data_dir),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert _heavy_modules(done.stdout) == []
    assert _heavy_modules(done.stdout, "NOT_READ_ONLY ") == []


def test_listen_answers_c_echo_without_importing_torch(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LISTEN_PROBE],
        env=_env(tmp_path / "data"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert _heavy_modules(done.stdout) == []


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.checkpoint import create_random_checkpoint

    return create_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture
def up_process(
    tmp_path: Path, tiny_checkpoint: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    env = _env(
        tmp_path / "data",
        STROKE_TRIAGE_WORKER__CHECKPOINT=str(tiny_checkpoint),
        STROKE_TRIAGE_TASK_QUEUE=f"startup-{os.getpid()}-{time.monotonic_ns()}",
    )
    log = tmp_path / "up.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "stroke_triage", "up"],
            env=env,
            cwd=REPO_ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, log, int(env["STROKE_TRIAGE_LISTENER__PORT"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_up_answers_c_echo_before_the_model_is_loaded(
    up_process: tuple[subprocess.Popen[bytes], Path, int],
) -> None:
    process, log, port = up_process
    deadline = time.monotonic() + 60
    while not echo(host="127.0.0.1", port=port, called_ae_title="STROKETRIAGE"):
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"up never answered C-ECHO:\n{log.read_text()}"
        time.sleep(0.05)
    # The order of events: the scanner was answered while the worker had not loaded the model.
    assert "Loaded model" not in log.read_text()
    while "Loaded model" not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline + 60, f"the worker never loaded:\n{log.read_text()}"
        time.sleep(0.2)
    # Still serving once the worker runs beside it.
    assert echo(host="127.0.0.1", port=port, called_ae_title="STROKETRIAGE")


def test_sigterm_lets_the_running_job_finish_then_up_exits(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    """SIGTERM as soon as a job has started: it is finished and reported, then `up` exits 0.

    `up` stops an idle worker at once on SIGTERM (stroke_triage.shutdown); a running task must
    still finish, never be cut off (docs/benchmarks.md, start-up).
    """
    import db.jobs
    from db.engine import create_engine_for, make_session_factory
    from db.enums import JobStatus
    from model.phantom import write_phantom_series
    from tests.e2e.helpers import storescu

    env = _env(
        tmp_path / "data",
        STROKE_TRIAGE_WORKER__CHECKPOINT=str(tiny_checkpoint),
        STROKE_TRIAGE_LISTENER__QUIET_PERIOD_S="0.5",
        STROKE_TRIAGE_TASK_QUEUE=f"startup-term-{os.getpid()}-{time.monotonic_ns()}",
    )
    port = int(env["STROKE_TRIAGE_LISTENER__PORT"])
    files = write_phantom_series(tmp_path / "series", n_slices=8, seed=3)
    log = tmp_path / "up.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "stroke_triage", "up"],
            env=env,
            cwd=REPO_ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    engine = create_engine_for(f"sqlite:///{tmp_path / 'data' / 'stroke-triage.db'}")
    try:
        deadline = time.monotonic() + 120
        while "Loaded model" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        storescu(files, port)
        sessions = make_session_factory(engine)
        while True:
            with sessions() as session:
                jobs = db.jobs.list_jobs(session=session)
            if jobs and jobs[0].status in (JobStatus.STARTED, JobStatus.INFERRED, JobStatus.DONE):
                break
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        process.terminate()
        assert process.wait(timeout=60) == 0, log.read_text()
        with sessions() as session:
            (job,) = db.jobs.list_jobs(session=session)
            assert (job.status, job.attempts) == (JobStatus.DONE, 1), log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        engine.dispose()


@pytest.mark.parametrize("command", ["listen", "up"])
def test_a_second_service_on_a_data_folder_in_use_exits_clearly(
    tmp_path: Path, command: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with DataDirLock(data):  # what a running `up` or `listen` holds
        done = run_cli([command], _env(data), timeout=60)
    assert done.returncode == 2, done.stderr
    assert "already using the data folder" in done.stderr
    assert str(os.getpid()) in done.stderr  # names the process that holds it
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["listen", "up"])
def test_a_taken_port_exits_clearly(tmp_path: Path, command: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run_cli(
            [command], _env(tmp_path / "data", STROKE_TRIAGE_LISTENER__PORT=str(port)), timeout=60
        )
    assert done.returncode == 2, done.stderr
    assert f"Cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "already listening there" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_data_folder_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    with pytest.raises(DataDirLockedError, match="already using the data folder"):
        DataDirLock(tmp_path).acquire()
    first.release()
    with DataDirLock(tmp_path):
        pass


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path\n"
            "from stroke_triage.data_lock import DataDirLock\n"
            "lock = DataDirLock(Path(sys.argv[1])); lock.acquire()\n"
            "print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirLockedError, match=str(holder.pid)):
            DataDirLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with DataDirLock(tmp_path):  # SIGKILL left the file, not the lock
        pass
