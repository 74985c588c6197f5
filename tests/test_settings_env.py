"""Which source wins: explicit overrides, then STROKE_TRIAGE_* variables, then the TOML file.

And the mistakes: each is refused in one line that names the variable or the file's key, with
the nearest valid name where there is one, and the CLI exits with status 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stroke_triage.settings import load_settings
from stroke_triage.settings_errors import SettingsError
from tests.helpers import run_cli

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
    with pytest.raises(SettingsError, match=r"^invalid settings: STROKE_TRIAGE_LISTENER__PORT="):
        load_settings(settings_file)


def _refusal(args: list[str], env: dict[str, str]) -> str:
    """The CLI's refusal: exit status 2, one line on stderr, no traceback."""
    done = run_cli(args, env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_misspelt_key_in_a_table_is_refused_with_the_nearest_name(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[listener]\nae_title = "SITE"\nquiet_perod_s = 10\n')
    with pytest.raises(SettingsError) as refused:
        load_settings(path)
    assert str(refused.value) == (
        f"The settings file {path}: unknown key 'quiet_perod_s' in [listener]; "
        "did you mean 'quiet_period_s'?"
    )
    assert "quiet_perod_s" in _refusal(["--config", str(path), "settings"], {})


def test_a_misspelt_key_in_an_array_of_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        '[[worker.pacs]]\nae_title = "PACS"\nhost = "pacs"\nport = 104\n'
        '[[worker.pacs]]\nae_title = "TEST"\nhost = "test"\nport = 104\nshadw = true\n'
    )
    line = _refusal(["--config", str(path), "settings"], {})
    assert "unknown key 'shadw' in [[worker.pacs]] number 2; did you mean 'shadow'?" in line


def test_a_misspelt_top_level_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('task_queu = "x"\n')
    line = _refusal(["--config", str(path), "settings"], {})
    assert line.endswith("unknown key 'task_queu'; did you mean 'task_queue'?")


def test_an_unknown_variable_is_refused_with_the_nearest_name() -> None:
    line = _refusal(["settings"], {"STROKE_TRIAGE_LISTNER__PORT": "11112"})
    assert line.startswith(
        "stroke-triage: STROKE_TRIAGE_LISTNER__PORT is not a stroke-triage setting; "
        "did you mean STROKE_TRIAGE_LISTENER__PORT?"
    )
    far = _refusal(["settings"], {"STROKE_TRIAGE_XYZZY": "1"})
    assert "STROKE_TRIAGE_XYZZY is not a stroke-triage setting." in far
    assert "settings --table" in far


def test_the_test_suites_and_the_files_variables_are_not_settings_but_allowed(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STROKE_TRIAGE_SHARED_DATA", "/data")
    monkeypatch.setenv("STROKE_TRIAGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/4")
    monkeypatch.setenv("STROKE_TRIAGE_CONFIG", str(settings_file))
    # One key of a table setting, as pydantic-settings reads it.
    monkeypatch.setenv("STROKE_TRIAGE_LISTENER__QUIET_PERIOD_OVERRIDES__CT1", "3")
    settings = load_settings()
    assert settings.task_queue == "from-file"
    assert settings.listener.quiet_period_overrides == {"ct1": 3.0}


def test_bad_json_names_the_variable_in_one_line() -> None:
    line = _refusal(["settings"], {"STROKE_TRIAGE_WORKER__PACS": '[{"ae_title": "PACS",}]'})
    assert line.startswith("stroke-triage: STROKE_TRIAGE_WORKER__PACS is not valid JSON (")
    assert "line 1 column 22" in line and "a JSON list" in line


def test_an_unknown_key_inside_a_json_variable_is_refused() -> None:
    pacs = [{"ae_titel": "PACS", "host": "pacs", "port": 104}]
    line = _refusal(["settings"], {"STROKE_TRIAGE_WORKER__PACS": json.dumps(pacs)})
    assert line == (
        "stroke-triage: STROKE_TRIAGE_WORKER__PACS: unknown key 'ae_titel' at [0]; "
        "did you mean 'ae_title'?"
    )


def test_broken_toml_is_one_line_with_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('task_queue = "x"\n[listener\nport = 104\n')
    line = _refusal(["--config", str(path), "settings"], {})
    assert line == (
        f"stroke-triage: The settings file {path} is not valid TOML: Expected ']' at the end "
        "of a table declaration (at line 2, column 10)."
    )


def test_a_bad_value_names_the_variable_the_user_set() -> None:
    line = _refusal(["settings"], {"STROKE_TRIAGE_LISTENER__PORT": "abc"})
    assert line == (
        "stroke-triage: invalid settings: STROKE_TRIAGE_LISTENER__PORT='abc': "
        "Input should be a valid integer, unable to parse string as an integer."
    )
    nested = _refusal(
        ["settings"],
        {"STROKE_TRIAGE_WORKER__PACS": '[{"ae_title": "PACS", "host": "pacs", "port": 0}]'},
    )
    assert nested.startswith(
        "stroke-triage: invalid settings: STROKE_TRIAGE_WORKER__PACS: worker.pacs.0.port=0: "
    )


def test_a_bad_value_in_the_file_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[listener]\nport = "abc"\n')
    line = _refusal(["--config", str(path), "settings"], {})
    assert line.startswith(f"stroke-triage: invalid settings: {path}: key listener.port='abc': ")


def test_a_secret_is_never_repeated_in_a_refusal() -> None:
    hook = {"kind": "webhook", "name": "w", "url": "https://hooks.example/x", "secret": 987654321}
    line = _refusal(["settings"], {"STROKE_TRIAGE_WORKER__NOTIFICATIONS": json.dumps([hook])})
    assert "STROKE_TRIAGE_WORKER__NOTIFICATIONS: worker.notifications.0.webhook.secret:" in line
    assert "987654321" not in line


@pytest.mark.parametrize(
    "url",
    [
        "http://ops:hunter2@hooks.example/x",  # refused: user info
        "ftp://ops:hunter2@hooks.example/x",  # refused: not http(s)
        "http://hooks.example/x?token=hunter2",  # refused: plain http
    ],
)
def test_a_secret_in_a_refused_url_is_never_repeated(url: str) -> None:
    hook = {"kind": "webhook", "name": "w", "url": url, "secret": "s"}
    line = _refusal(["settings"], {"STROKE_TRIAGE_WORKER__NOTIFICATIONS": json.dumps([hook])})
    assert "STROKE_TRIAGE_WORKER__NOTIFICATIONS" in line
    assert "hunter2" not in line


def test_effective_settings_leave_out_a_url_query(monkeypatch: pytest.MonkeyPatch) -> None:
    from stroke_triage.settings_effective import effective_settings

    # A webhook key in the query (Azure Functions' ?code=...) is a secret too.
    hook = {"kind": "webhook", "name": "w", "url": "https://h.example/x?code=K3Y", "secret": "s"}
    monkeypatch.setenv("STROKE_TRIAGE_WORKER__NOTIFICATIONS", json.dumps([hook]))
    monkeypatch.setenv("STROKE_TRIAGE_DATABASE_URL", "postgresql+psycopg://t@db/t?password=pw9")
    text = effective_settings(load_settings())
    assert "https://h.example/x" in text
    assert "K3Y" not in text and "pw9" not in text


def test_effective_settings_mask_url_passwords_with_sqlalchemy_and_kombu(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stroke_triage.settings_effective import effective_settings, mask_url

    monkeypatch.setenv(
        "STROKE_TRIAGE_DATABASE_URL", "postgresql+psycopg://triage:pw%40x@db/t?sslmode=require"
    )
    monkeypatch.setenv("STROKE_TRIAGE_BROKER_URL", "amqp://triage:hunter2@mq:5672//")
    monkeypatch.setenv("STROKE_TRIAGE_API__SESSION_SECRET", "signing-key")
    text = effective_settings(load_settings(settings_file))
    # SQLAlchemy masks the database URL's password and keeps its query (driver options).
    assert (
        "STROKE_TRIAGE_DATABASE_URL=postgresql+psycopg://triage:***@db/t?sslmode=require\n" in text
    )
    assert "STROKE_TRIAGE_BROKER_URL=amqp://triage:***@mq:5672//" in text
    assert "# resolved broker=amqp://triage:***@mq:5672//" in text
    assert "STROKE_TRIAGE_API__SESSION_SECRET=***" in text
    assert "pw" not in text and "hunter2" not in text and "signing-key" not in text
    assert mask_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert mask_url("filesystem://") == "filesystem://"  # nothing to mask: kept as written
    assert mask_url("sqlite:////data/x.db") == "sqlite:////data/x.db"
