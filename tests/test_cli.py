"""The `stroke-triage` command: clear refusals and admin views, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def _run(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STROKE_TRIAGE_")}
    return subprocess.run(
        [sys.executable, "-m", "stroke_triage", *args],
        env={**clean, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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
    done = _run(["results"], {"STROKE_TRIAGE_DATA_DIR": str(tmp_path / "data")})
    assert done.returncode == 0, done.stderr
    assert "No results yet." in done.stdout
