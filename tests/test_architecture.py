"""Checks on how the parts fit: the task's name, and no torch in the listener.

The deploy files (compose, Dockerfile, systemd units) are checked in tests/test_deploy.py.
"""

from __future__ import annotations

import subprocess
import sys

from listener import publish
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
