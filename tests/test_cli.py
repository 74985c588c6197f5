"""The `stroke-triage` command: clear refusals and admin views, run as a user would."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command

import db.jobs
import db.receiving
from console import admin
from db.engine import (
    HEAD_REVISION,
    _alembic_config,
    create_engine_for,
    current_revision,
    make_session_factory,
    migrate,
)
from db.enums import JobStatus
from stroke_triage import service
from stroke_triage.settings import load_settings
from tests.helpers import REPO_ROOT
from tests.helpers import run_cli as _run


def test_worker_refuses_to_start_without_a_checkpoint(tmp_path: Path) -> None:
    done = _run(
        ["work"],
        {
            "STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"),
            "STROKE_TRIAGE_WORKER__CHECKPOINT": str(tmp_path / "nothing"),
        },
    )
    assert done.returncode == 2
    assert "No usable model checkpoint" in done.stderr
    assert "stroke-triage train" in done.stderr
    assert "Traceback" not in done.stderr


def test_up_refuses_to_start_without_a_checkpoint(tmp_path: Path) -> None:
    done = _run(
        ["up"],
        {
            "STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"),
            "STROKE_TRIAGE_WORKER__CHECKPOINT": str(tmp_path / "nothing"),
        },
    )
    assert done.returncode == 2
    assert "No usable model checkpoint" in done.stderr


def test_invalid_settings_are_one_clear_message(tmp_path: Path) -> None:
    done = _run(
        ["results"],
        {
            "STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"),
            "STROKE_TRIAGE_LISTENER__AE_TITLE": "A" * 17,
        },
    )
    assert done.returncode == 2
    assert "invalid settings" in done.stderr
    assert "AE title" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_settings_file_is_one_clear_message(tmp_path: Path) -> None:
    done = _run(["--config", str(tmp_path / "missing.toml"), "results"], {})
    assert done.returncode == 2
    assert "missing.toml" in done.stderr
    assert "Traceback" not in done.stderr


def test_settings_file_is_read(tmp_path: Path) -> None:
    config = tmp_path / "triage.toml"
    config.write_text(f'data_dir = "{tmp_path / "from-file"}"\n')
    done = _run(["--config", str(config), "migrate"], {})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "from-file" / "stroke-triage.db").is_file()


def test_results_on_an_empty_database(tmp_path: Path) -> None:
    env = {"STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data")}
    assert _run(["migrate"], env).returncode == 0
    done = _run(["results"], env)
    assert done.returncode == 0, done.stderr
    assert "No results yet." in done.stdout


def test_help_loads_neither_sqlalchemy_nor_alembic() -> None:
    code = (
        "import sys\n"
        "from stroke_triage.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", ["results", "jobs", "exports"])
def test_read_only_commands_refuse_a_schema_never_migrated(tmp_path: Path, command: str) -> None:
    data = tmp_path / "data"
    done = _run([command], {"STROKE_TRIAGE_DATA_DIR": str(data)})
    assert done.returncode == 2
    assert f"this version needs {HEAD_REVISION}" in done.stderr
    assert "run `stroke-triage migrate` or start the service once" in done.stderr
    assert "Traceback" not in done.stderr
    engine = create_engine_for(f"sqlite:///{data / 'stroke-triage.db'}")
    try:
        assert current_revision(engine) is None  # read-only: nothing was migrated
    finally:
        engine.dispose()


def test_read_only_commands_refuse_a_schema_behind(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    engine = create_engine_for(f"sqlite:///{data / 'stroke-triage.db'}")
    try:
        config = _alembic_config()
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.commit()
        done = _run(["jobs"], {"STROKE_TRIAGE_DATA_DIR": str(data)})
        assert done.returncode == 2
        assert (
            f"The database schema is at 0001, this version needs {HEAD_REVISION}: "
            "run `stroke-triage migrate` or start the service once."
        ) in done.stderr
        assert current_revision(engine) == "0001"
        assert _run(["migrate"], {"STROKE_TRIAGE_DATA_DIR": str(data)}).returncode == 0
        assert current_revision(engine) == HEAD_REVISION
        done = _run(["jobs"], {"STROKE_TRIAGE_DATA_DIR": str(data)})
        assert done.returncode == 0, done.stderr
        assert "No jobs." in done.stdout
    finally:
        engine.dispose()


def test_up_checks_the_checkpoint_once_and_leaves_migration_to_the_listener(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    class FakeListener:
        def stop(self) -> None:
            calls.append("stop listener")

    def fake_start_listener(*args: object) -> FakeListener:
        calls.append("start listener")  # the real one migrates the database
        return FakeListener()

    monkeypatch.setattr(service, "check_checkpoint", lambda _: calls.append("checkpoint"))
    monkeypatch.setattr(service, "migrate", lambda _: calls.append("migrate"))
    monkeypatch.setattr(service, "start_listener", fake_start_listener)

    def fake_worker_main(_: object) -> int:
        calls.append("worker")
        return 0

    monkeypatch.setattr(service, "_worker_main", fake_worker_main)
    monkeypatch.setattr(service, "check_port_free", lambda *_: None)
    settings = load_settings(data_dir=tmp_path / "data")
    assert service.run_all(settings) == 0
    # The listener answers first; torch and the checkpoint are loaded after (issue 11 item 9).
    assert calls == ["start listener", "checkpoint", "worker", "stop listener"]

    calls.clear()
    assert service.run_worker(settings) == 0
    assert calls == ["checkpoint", "migrate", "worker"]


def test_requeue_publishes_through_the_listener_and_marks_the_job_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    engine = create_engine_for(settings.resolved_database_url)
    migrate(engine)
    sessions = make_session_factory(engine)
    with sessions() as session:
        db.receiving.record_instances(
            session=session,
            study_instance_uid="1.2.3",
            series_instance_uid="1.2.3.4",
            modality="CT",
            series_description=None,
            calling_ae_title="SCANNER",
            instances=[],
        )
        job = db.jobs.create_job(session=session, series_instance_uid="1.2.3.4")
        db.jobs.start_job(session=session, job_id=job.id)
        db.jobs.fail_job(session=session, job_id=job.id, error="boom", final=True)
        session.commit()
        job_id = job.id
    sent: list[tuple[int, str]] = []

    def send(_: object, *, job_id: int, series_instance_uid: str) -> str:
        sent.append((job_id, series_instance_uid))
        return "task-42"

    # The broker is faked; the publisher records the job as queued in the real database.
    monkeypatch.setattr("listener.publish.JobPublisher.send", send)
    assert admin.requeue(settings.console_runtime(), job_id=job_id) == 0
    assert sent == [(job_id, "1.2.3.4")]
    with sessions() as session:
        again = db.jobs.get_job(session=session, job_id=job_id)
        assert (again.status, again.task_id, again.attempts) == (JobStatus.QUEUED, "task-42", 0)
    engine.dispose()


def test_the_listener_port_check_binds_ipv6_addresses_too() -> None:
    # "::" (every IPv6 address) was refused: the check always made an IPv4 socket.
    service.check_port_free("::", 0)
    service.check_port_free("127.0.0.1", 0)
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as taken:
        taken.bind(("::1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(service.ServiceError, match="already listening"):
            service.check_port_free("::1", port)
