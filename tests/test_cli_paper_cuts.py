"""Operator paper cuts (issues 11 and 24): retry-export without a target, dead exports, demo
errors, and log lines nobody needs."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import db.exports
from db.enums import ExportKind, JobStatus
from stroke_triage.cli import CHATTY_LIBRARIES, configure_logging
from stroke_triage.demo import DemoError, _wait_for_listener
from tests.helpers import (
    cli_sqlite_database,
    database_session,
    free_port,
    record_head_ct_series,
    record_suspected_result,
    run_cli,
)

STUDY = "1.2.826.0.1.3680043.10.43"
SERIES = f"{STUDY}.1"


@pytest.fixture
def dead_export(tmp_path: Path) -> tuple[dict[str, str], int]:
    """A database whose only job has a result and an export that gave up; its env and job id."""
    database = cli_sqlite_database(tmp_path)
    with database_session(database.url) as session:
        record_head_ct_series(session, study=STUDY, series=SERIES)
        job_id, result_id = record_suspected_result(session, series=SERIES)
        export = db.exports.ensure_export(
            session=session,
            result_id=result_id,
            kind=ExportKind.SR,
            destination="PACS@127.0.0.1:104",
            sop_instance_uid=f"{STUDY}.9.1",
            path="reports/sr.dcm",
        )
        db.exports.mark_export_failed(
            session=session,
            export_id=export.id,
            error="Association rejected by PACS",
            max_attempts=1,
            backoff_s=60,
        )
        session.commit()
    return database.env, job_id


def _job_ids(stdout: str) -> set[int]:
    lines = stdout.strip().splitlines()
    return {int(line.split()[0]) for line in lines[2:]} if len(lines) > 2 else set()


def test_retry_export_without_a_target_is_an_error_that_says_what_to_type(
    dead_export: tuple[dict[str, str], int],
) -> None:
    env, _ = dead_export
    done = run_cli(["retry-export"], env)
    assert done.returncode == 2, done.stdout
    assert "--all-dead" in done.stderr
    assert "retry-export EXPORT" in done.stderr
    assert "back in the outbox" not in done.stdout


def test_a_dead_export_shows_its_job_among_the_dead_letters_until_it_is_retried(
    dead_export: tuple[dict[str, str], int],
) -> None:
    env, job_id = dead_export
    failed = run_cli(["jobs", "--status", "failed"], env)
    assert failed.returncode == 0, failed.stderr
    assert _job_ids(failed.stdout) == {job_id}
    assert JobStatus.EXPORT_FAILED.value in failed.stdout
    only = run_cli(["jobs", "--status", "export_failed"], env)
    assert _job_ids(only.stdout) == {job_id}

    retried = run_cli(["retry-export", "--all-dead"], env)
    assert retried.returncode == 0, retried.stderr
    assert "1 export(s) back in the outbox" in retried.stdout
    after = run_cli(["jobs", "--status", "failed"], env)
    assert _job_ids(after.stdout) == set(), after.stdout
    assert JobStatus.INFERRED.value in run_cli(["jobs"], env).stdout


def test_the_demo_shows_the_service_log_when_the_listener_never_answers(tmp_path: Path) -> None:
    log_path = tmp_path / "service.log"
    log_path.write_text("Traceback (most recent call last):\nOSError: [Errno 98] in use\n")
    # A "service" that stays alive but never listens on the port.
    service = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(DemoError) as raised:
            _wait_for_listener(service, free_port(), log_path, timeout_s=1.0)
    finally:
        service.kill()
        service.wait()
    message = str(raised.value)
    assert "did not answer C-ECHO" in message
    assert "OSError: [Errno 98] in use" in message


def test_a_command_on_a_current_schema_does_not_announce_it(tmp_path: Path) -> None:
    env = {"STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data"), "STROKE_TRIAGE_LOG_LEVEL": "INFO"}
    first = run_cli(["migrate"], env)
    assert first.returncode == 0, first.stderr
    # The first migration says what it did, in our words only (no Alembic plugin chatter).
    assert "INFO db.engine: Database schema at" in first.stderr
    assert "alembic" not in first.stderr
    again = run_cli(["migrate"], env)
    assert again.returncode == 0, again.stderr
    assert "Database schema at" not in again.stderr
    jobs = run_cli(["jobs"], env)
    assert jobs.returncode == 0, jobs.stderr
    assert jobs.stderr == ""


@pytest.fixture
def restored_loggers() -> Iterator[None]:
    names = ["", *CHATTY_LIBRARIES]
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("restored_loggers")
def test_library_chatter_is_off_unless_the_level_is_debug() -> None:
    configure_logging("INFO")
    assert {logging.getLogger(n).getEffectiveLevel() for n in CHATTY_LIBRARIES} == {logging.WARNING}
    assert not logging.getLogger("pynetdicom.acse").isEnabledFor(logging.INFO)
    configure_logging("ERROR")
    assert logging.getLogger("highdicom").getEffectiveLevel() == logging.ERROR
    configure_logging("DEBUG")
    assert {logging.getLogger(n).level for n in CHATTY_LIBRARIES} == {logging.NOTSET}
