"""The console's CLI: tokens printed once and stored hashed, the audit log, results as CSV/JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from console.tokens import token_sha256
from db.engine import create_engine_for, make_session_factory
from tests.api.seed import seed
from tests.helpers import REPO_ROOT, migrated_sqlite, run_cli


def test_token_audit_and_result_formats(tmp_path: Path) -> None:
    url = migrated_sqlite(tmp_path / "cli.db")
    engine = create_engine_for(url)
    seeded = seed(make_session_factory(engine))
    env = {"STROKE_TRIAGE_DATA_DIR": str(tmp_path), "STROKE_TRIAGE_DATABASE_URL": url}

    made = run_cli(["token", "create", "--name", "ops", "--scope", "admin"], env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.splitlines()[0]
    assert token.startswith("st_") and len(token) > 40
    with engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT token_sha256 FROM api_tokens").scalar_one()
    assert stored == token_sha256(token) and token not in stored

    listed = run_cli(["token", "list"], env)
    assert "ops" in listed.stdout and "admin" in listed.stdout and token not in listed.stdout
    assert run_cli(["token", "revoke", "ops"], env).returncode == 0
    assert run_cli(["token", "revoke", "nobody"], env).returncode != 0
    audit = run_cli(["audit"], env).stdout
    assert "token.create" in audit and "token.revoke" in audit

    as_json = json.loads(run_cli(["results", "--format", "json"], env).stdout)
    assert [r["series_instance_uid"] for r in as_json] == [seeded.done_series]
    as_csv = run_cli(["results", "--format", "csv"], env).stdout.splitlines()
    assert as_csv[0].split(",")[:3] == [
        "last_received_at",
        "study_instance_uid",
        "series_instance_uid",
    ]
    assert len(as_csv) == 2 and seeded.done_series in as_csv[1]
    engine.dispose()


def test_console_never_imports_torch() -> None:
    code = (
        "import sys, console.app, console.server, console.commands; print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
