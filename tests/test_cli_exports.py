"""`stroke-triage exports` and `retry-export`, run as an administrator would, on a SQLite file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import db.exports
from db.enums import ExportKind, ExportStatus
from tests.helpers import (
    cli_sqlite_database,
    database_session,
    record_head_ct_series,
    record_suspected_result,
    run_cli,
)

STUDY = "1.2.826.0.1.3680043.10.42"
SERIES = f"{STUDY}.1"


@dataclass
class Outbox:
    """A database with one result and its exports: sent, pending, failed (retrying), dead."""

    env: dict[str, str]
    url: str
    ids: dict[str, int]

    def status(self, name: str) -> tuple[ExportStatus, int]:
        with database_session(self.url) as session:
            export = db.exports.get_export(session=session, export_id=self.ids[name])
            return ExportStatus(export.status), int(export.attempts)


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    database = cli_sqlite_database(tmp_path)
    ids: dict[str, int] = {}
    with database_session(database.url) as session:
        record_head_ct_series(session, study=STUDY, series=SERIES)
        _, result_id = record_suspected_result(session, series=SERIES)
        for name, attempts_to_fail in (("sent", 0), ("pending", 0), ("failed", 1), ("dead", 3)):
            export = db.exports.ensure_export(
                session=session,
                result_id=result_id,
                kind=ExportKind.SR,
                destination=f"PACS_{name.upper()}@127.0.0.1:104",
                sop_instance_uid=f"{STUDY}.9.{len(ids) + 1}",
                path=f"reports/{name}.dcm",
            )
            ids[name] = int(export.id)
            for _ in range(attempts_to_fail):
                db.exports.mark_export_failed(
                    session=session,
                    export_id=export.id,
                    error=f"Association rejected by PACS_{name.upper()}",
                    max_attempts=3,
                    backoff_s=60,
                )
        db.exports.mark_export_sent(session=session, export_id=ids["sent"])
        session.commit()
    return Outbox(env=database.env, url=database.url, ids=ids)


def _rows(stdout: str) -> dict[int, list[str]]:
    """The table's data rows by export id (first column)."""
    lines = stdout.strip().splitlines()
    assert lines[1].startswith("---"), stdout
    return {int(line.split()[0]): line.split() for line in lines[2:]}


def test_exports_lists_every_export_with_its_state(outbox: Outbox) -> None:
    done = run_cli(["exports"], outbox.env)
    assert done.returncode == 0, done.stderr
    rows = _rows(done.stdout)
    assert set(rows) == set(outbox.ids.values())
    for name, export_id in outbox.ids.items():
        assert name in rows[export_id], rows[export_id]
    assert "Association rejected by PACS_DEAD" in done.stdout


def test_exports_filtered_by_status_shows_the_dead_letters(outbox: Outbox) -> None:
    done = run_cli(["exports", "--status", "dead"], outbox.env)
    assert done.returncode == 0, done.stderr
    assert set(_rows(done.stdout)) == {outbox.ids["dead"]}


def test_exports_refuses_an_unknown_status(outbox: Outbox) -> None:
    done = run_cli(["exports", "--status", "lost"], outbox.env)
    assert done.returncode == 2
    assert "invalid choice" in done.stderr


def test_retry_export_puts_one_dead_export_back(outbox: Outbox) -> None:
    assert outbox.status("dead") == (ExportStatus.DEAD, 3)
    done = run_cli(["retry-export", str(outbox.ids["dead"])], outbox.env)
    assert done.returncode == 0, done.stderr
    assert "1 export(s) back in the outbox." in done.stdout
    assert outbox.status("dead") == (ExportStatus.PENDING, 0)
    assert outbox.status("failed") == (ExportStatus.FAILED, 1)
    assert outbox.status("sent") == (ExportStatus.SENT, 1)


def test_retry_export_all_dead(outbox: Outbox) -> None:
    done = run_cli(["retry-export", "--all-dead"], outbox.env)
    assert done.returncode == 0, done.stderr
    assert "1 export(s) back in the outbox." in done.stdout
    assert outbox.status("dead") == (ExportStatus.PENDING, 0)
    listed = run_cli(["exports", "--status", "dead"], outbox.env)
    assert listed.stdout.strip() == "No exports."


def test_retry_export_refuses_a_sent_export_and_changes_nothing(outbox: Outbox) -> None:
    done = run_cli(["retry-export", str(outbox.ids["dead"]), str(outbox.ids["sent"])], outbox.env)
    assert done.returncode == 2
    assert "already sent" in done.stderr
    assert "Traceback" not in done.stderr
    # One transaction: the dead export before it was not put back either.
    assert outbox.status("dead") == (ExportStatus.DEAD, 3)
    assert outbox.status("sent") == (ExportStatus.SENT, 1)


def test_retry_export_of_an_unknown_export_is_one_clear_message(outbox: Outbox) -> None:
    done = run_cli(["retry-export", "9999"], outbox.env)
    assert done.returncode == 2
    assert "9999" in done.stderr
    assert "Traceback" not in done.stderr


def test_exports_on_an_empty_database(tmp_path: Path) -> None:
    done = run_cli(["exports"], cli_sqlite_database(tmp_path).env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "No exports."
