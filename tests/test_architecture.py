"""Checks on how the parts fit: task names, deploy files, CLI commands."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from listener import publish
from stroke_triage.cli import build_parser
from tests.helpers import REPO_ROOT
from worker import tasks


def test_listener_sends_the_task_the_worker_registers() -> None:
    assert publish.PROCESS_SERIES_TASK == tasks.PROCESS_SERIES_TASK


def test_listener_and_its_command_never_import_torch() -> None:
    code = (
        "import sys, listener.server, listener.completion, listener.publish, "
        "stroke_triage.cli, stroke_triage.service; "
        "bad = [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules]; "
        "print(bad); raise SystemExit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _cli_commands() -> set[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if a.dest == "command"]
    return set(actions[0].choices)  # type: ignore[arg-type]


def test_compose_file_is_valid_and_uses_real_commands() -> None:
    compose = yaml.safe_load((REPO_ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "postgres", "listener", "worker"} <= set(services)
    commands = _cli_commands()
    for name in ("listener", "worker"):
        command = services[name]["command"]
        words = command if isinstance(command, list) else command.split()
        assert words[0] in commands, f"{name} runs unknown command {words[0]!r}"
        env = services[name]["environment"]
        assert any(key.startswith("STROKE_TRIAGE_") for key in env)


def test_dockerfile_entrypoint_is_the_cli() -> None:
    text = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', text, re.MULTILINE)
    assert entry and entry.group(1) == "stroke-triage"
    cmd = re.search(r'^CMD \["([^"]+)"', text, re.MULTILINE)
    assert cmd and cmd.group(1) in _cli_commands()
    assert "constraints.txt" in text
