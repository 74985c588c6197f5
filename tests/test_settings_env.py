"""Which source wins: explicit overrides, then STROKE_TRIAGE_* variables, then the TOML file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stroke_triage.settings import load_settings

TOML = """
task_queue = "from-file"
log_level = "WARNING"

[listener]
ae_title = "FILEAE"
port = 11112
quiet_period_s = 7.5

[worker]
task_max_retries = 4
"""


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TOML settings file, in an environment without any other STROKE_TRIAGE_ variable."""
    for name in list(os.environ):
        if name.startswith("STROKE_TRIAGE_"):
            monkeypatch.delenv(name)
    path = tmp_path / "stroke-triage.toml"
    path.write_text(TOML)
    return path


def test_file_alone_is_read(settings_file: Path) -> None:
    settings = load_settings(settings_file)
    assert settings.task_queue == "from-file"
    assert (settings.listener.ae_title, settings.listener.port) == ("FILEAE", 11112)
    assert settings.listener.quiet_period_s == 7.5
    assert settings.worker.task_max_retries == 4


def test_environment_beats_the_file(settings_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STROKE_TRIAGE_TASK_QUEUE", "from-env")
    monkeypatch.setenv("STROKE_TRIAGE_LOG_LEVEL", "debug")
    settings = load_settings(settings_file)
    assert settings.task_queue == "from-env"
    assert settings.log_level == "DEBUG"


def test_nested_variable_overrides_one_key_and_keeps_the_files_others(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STROKE_TRIAGE_LISTENER__PORT", "4242")
    monkeypatch.setenv("STROKE_TRIAGE_WORKER__TASK_MAX_RETRIES", "9")
    settings = load_settings(settings_file)
    assert settings.listener.port == 4242
    assert settings.worker.task_max_retries == 9
    # The rest of the [listener] and [worker] tables still comes from the file.
    assert settings.listener.ae_title == "FILEAE"
    assert settings.listener.quiet_period_s == 7.5
    assert settings.task_queue == "from-file"


def test_file_named_by_the_environment(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STROKE_TRIAGE_CONFIG", str(settings_file))
    monkeypatch.setenv("STROKE_TRIAGE_LISTENER__AE_TITLE", "ENVAE")
    settings = load_settings()
    assert settings.listener.ae_title == "ENVAE"
    assert settings.listener.port == 11112


def test_explicit_overrides_beat_the_environment(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STROKE_TRIAGE_TASK_QUEUE", "from-env")
    settings = load_settings(settings_file, task_queue="explicit")
    assert settings.task_queue == "explicit"


def test_invalid_environment_value_is_refused_even_with_a_valid_file(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STROKE_TRIAGE_LISTENER__PORT", "not-a-port")
    with pytest.raises(ValueError, match="port"):
        load_settings(settings_file)
