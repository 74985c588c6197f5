"""The deploy files name commands, settings and packages that exist, and fit together.

No container engine runs here: the compose file and the systemd units are parsed and checked
against the CLI's parser and the settings model, the Dockerfile against pyproject.toml (and the
files it copies are built into a wheel), and the units with `systemd-analyze verify`.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from stroke_triage.cli import build_parser
from stroke_triage.settings import CONFIG_FILE_ENV, Settings, load_settings
from stroke_triage.settings_effective import SECRET_NAME
from tests.helpers import REPO_ROOT, require_tool
from tests.settings_names import (
    NOT_SETTINGS,
    clear_setting_variables,
    load_toml_settings,
    setting_variables,
)

DEPLOY = REPO_ROOT / "deploy"
#: A password written into a URL (``scheme://user:password@host``).
URL_PASSWORD = re.compile(r"://[^/:@\s]*:[^@\s]+@")
EXAMPLE_TOML = DEPLOY / "stroke-triage.example.toml"
EXAMPLE_ENV = DEPLOY / "stroke-triage.env.example"
UNITS = DEPLOY / "systemd"
APP_SERVICES = {"listener": "listen", "worker": "work", "console": "api"}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def _env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _parses(argv: list[str]) -> bool:
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        return False
    return True


def _service_settings(
    service: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, dict[str, str]]:
    """The settings a compose service resolves: its env file, its environment, the TOML file.

    The mounted TOML file is the site's copy of the example, so the example stands in for it.
    """
    environment = {str(k): str(v) for k, v in service["environment"].items()}
    for name in service["env_file"]:
        example = DEPLOY / f"{name}.example"
        environment = {**_env_file(example), **environment}
    clear_setting_variables(monkeypatch)
    for key, value in environment.items():
        if key.startswith("STROKE_TRIAGE_") and key != CONFIG_FILE_ENV:
            monkeypatch.setenv(key, value)
    mounts = dict(volume.split(":")[1::-1] for volume in service["volumes"])
    config = environment[CONFIG_FILE_ENV]
    assert mounts[config] == "./stroke-triage.toml", "the TOML file is mounted where it is named"
    return load_settings(EXAMPLE_TOML), environment


def test_compose_runs_listener_worker_console_redis_postgres() -> None:
    services = _compose()["services"]
    assert set(services) == {*APP_SERVICES, "redis", "postgres"}
    for name, command in APP_SERVICES.items():
        argv = services[name]["command"]
        assert argv == [command], f"{name} runs {argv}"
        assert _parses(argv)
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", f"{name} has no restart policy"
        assert service["healthcheck"]["test"][0] == "CMD", f"{name} has no health check"
    for name in APP_SERVICES:
        conditions = services[name]["depends_on"]
        assert conditions == {
            "redis": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
        }


def test_compose_variables_are_settings_and_load_with_the_example(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    known = setting_variables() | NOT_SETTINGS
    for name in APP_SERVICES:
        settings, environment = _service_settings(services[name], monkeypatch)
        ours = [key for key in environment if key.startswith("STROKE_TRIAGE_")]
        assert set(ours) <= known, f"{name}: {set(ours) - known}"
        data_mount = next(v for v in services[name]["volumes"] if v.startswith("triage-data:"))
        assert Path(data_mount.split(":")[1]) == settings.data_dir
        assert settings.resolved_broker_url == "redis://redis:6379/0"
        assert urlsplit(settings.resolved_database_url).hostname == "postgres"


def _health_port(test: list[str]) -> int:
    url: str = re.findall(r"http://[^']+", test[-1])[0]
    port = urlsplit(url).port
    assert port is not None
    return port


def test_compose_health_checks_and_ports_match_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]

    listener, _ = _service_settings(services["listener"], monkeypatch)
    echo = services["listener"]["healthcheck"]["test"]
    assert echo[1:5] == ["python", "-m", "pynetdicom", "echoscu"]
    options = dict(itertools.pairwise(echo[5:-2]))
    assert options["-aec"] == listener.listener.ae_title
    assert echo[-2:] == ["127.0.0.1", str(listener.listener.port)]
    calling = options["-aet"]
    allowed = listener.listener.allowed_calling_ae_titles
    assert not allowed or calling in allowed, "the health check's AE title is allowed"
    assert listener.listener.calling_ae_addresses.get(calling, ["127.0.0.1/32"]) == ["127.0.0.1/32"]
    assert services["listener"]["ports"] == [f"{listener.listener.port}:{listener.listener.port}"]
    assert listener.listener.host == "0.0.0.0"

    worker, _ = _service_settings(services["worker"], monkeypatch)
    worker_test = services["worker"]["healthcheck"]["test"]
    assert "/ready" in worker_test[-1]
    assert _health_port(worker_test) == worker.worker.metrics_port != 0
    assert worker.worker.metrics_host in ("0.0.0.0", "127.0.0.1")

    console, _ = _service_settings(services["console"], monkeypatch)
    console_test = services["console"]["healthcheck"]["test"]
    assert "/ready" in console_test[-1]
    assert _health_port(console_test) == console.api.port
    assert console.api.host == "0.0.0.0"  # inside its container, for the published port
    assert services["console"]["ports"] == [f"127.0.0.1:{console.api.port}:{console.api.port}"]


def test_compose_volumes_are_named_and_the_data_folder_shared() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(compose["volumes"]) == {"triage-data", "database-data", "broker-data"}
    for name in APP_SERVICES:
        assert "triage-data:/data" in services[name]["volumes"]
    assert services["postgres"]["volumes"] == ["database-data:/var/lib/postgresql/data"]
    assert services["redis"]["volumes"] == ["broker-data:/data"]


def test_compose_holds_no_secrets_and_its_env_file_is_ignored() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for key, value in service.get("environment", {}).items():
            assert not SECRET_NAME.search(key), f"{name}: {key} belongs in the env file"
            assert not URL_PASSWORD.search(str(value)), f"{name}: a password in {key}"
        for env_file in service.get("env_file", []):
            assert (DEPLOY / f"{env_file}.example").is_file()
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert {"stroke-triage.env", "stroke-triage.toml"} <= set(ignored)
    example = _env_file(EXAMPLE_ENV)
    known = setting_variables()
    assert all(key in known or key.startswith("POSTGRES_") for key in example), example
    password = example["POSTGRES_PASSWORD"]
    assert urlsplit(example["STROKE_TRIAGE_DATABASE_URL"]).password == password


def _packages() -> list[str]:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(pattern.rstrip("*") for pattern in patterns)


def _dockerfile_copies() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    sources: list[str] = []
    for line in text.splitlines():
        if line.startswith("COPY "):
            sources += line.split()[1:-1]
    return sources


def test_every_package_is_in_pyproject_and_the_dockerfile() -> None:
    on_disk = sorted(
        path.parent.name
        for path in REPO_ROOT.glob("*/__init__.py")
        if path.parent.name not in ("tests", "benchmarks")
    )
    assert _packages() == on_disk
    copied = _dockerfile_copies()
    missing = set(_packages()) - set(copied)
    assert not missing, f"deploy/Dockerfile does not copy {sorted(missing)}"
    assert {"pyproject.toml", "constraints.txt", "README.md", "LICENSE"} <= set(copied)


def test_the_dockerfiles_files_build_a_wheel_with_every_package(tmp_path: Path) -> None:
    """`pip install .` in the image installs what the COPY lines give it: every package."""
    source = tmp_path / "app"
    source.mkdir()
    for name in _dockerfile_copies():
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    built = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--no-index", "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(source)),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "did not match any files" not in built.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in _packages():
        assert f"{package}/__init__.py" in names, f"the image would lack {package}"
    assert any(name.startswith("console/templates/") for name in names)
    assert "model/weights/spec.json" in names
    assert any(name.startswith("db/migrations/versions/") for name in names)
    assert any(name.endswith("licenses/LICENSE") for name in names)


def test_dockerfile_entrypoint_is_the_cli() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', text, re.MULTILINE)
    assert entry and entry.group(1) == "stroke-triage"
    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert cmd and _parses(yaml.safe_load(cmd.group(1)))
    assert "-c constraints.txt" in text
    assert re.search(r"^USER triage$", text, re.MULTILINE)


def test_example_toml_holds_only_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_setting_variables(monkeypatch)
    settings, unknown = load_toml_settings(EXAMPLE_TOML)
    assert not unknown
    assert settings.worker.pacs and settings.database_url and settings.broker_url


def _unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """The sections of a systemd unit, each a list of (key, value) in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            current.append((key, value))
    return sections


def _values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [value for name, value in section if name == key]


@pytest.mark.parametrize("name", ["stroke-triage.service", "stroke-triage-purge.service"])
def test_systemd_units_run_a_real_command_as_a_hardened_user(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _unit(UNITS / name)["Service"]
    (user,) = _values(service, "User")
    assert user not in ("root", "0", "")
    (command,) = _values(service, "ExecStart")
    words = shlex.split(command)
    assert Path(words[0]).name == "stroke-triage" and words[0].startswith("/")
    assert _parses(words[1:])
    assignments = [item for value in _values(service, "Environment") for item in shlex.split(value)]
    environment = dict(item.split("=", 1) for item in assignments)
    ours = {key for key in environment if key.startswith("STROKE_TRIAGE_")}
    assert ours <= setting_variables() | NOT_SETTINGS
    assert environment[CONFIG_FILE_ENV] == "/etc/stroke-triage/stroke-triage.toml"
    assert _values(service, "ProtectSystem") == ["strict"]
    assert _values(service, "NoNewPrivileges") == ["yes"]
    assert _values(service, "CapabilityBoundingSet") == [""]
    clear_setting_variables(monkeypatch)
    data_dir = load_settings(EXAMPLE_TOML).data_dir
    assert str(data_dir) in _values(service, "ReadWritePaths")
    assert f"/var/lib/{_values(service, 'StateDirectory')[0]}" == str(data_dir)


def test_the_purge_timer_starts_the_purge_service() -> None:
    timer = _unit(UNITS / "stroke-triage-purge.timer")
    assert _values(timer["Timer"], "OnCalendar") == ["daily"]
    assert (UNITS / "stroke-triage-purge.service").is_file()  # the timer's namesake
    service = _unit(UNITS / "stroke-triage-purge.service")["Service"]
    assert _values(service, "Type") == ["oneshot"]


def test_systemd_analyze_finds_nothing_wrong_in_the_units(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    cli = shutil.which("stroke-triage", path=str(Path(sys.executable).parent))
    assert cli is not None
    for unit in UNITS.iterdir():
        # The installed path does not exist here: point ExecStart at this checkout's CLI.
        text = unit.read_text().replace("/opt/stroke-triage/bin/stroke-triage", cli)
        (tmp_path / unit.name).write_text(text)
    done = subprocess.run(
        [analyze, "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stdout + done.stderr
