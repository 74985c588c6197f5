"""`make demo`, the README's first command, run as a user would run it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, require_tool

pytestmark = pytest.mark.slow


def test_make_demo_prints_a_verdict(tmp_path: Path) -> None:
    make = require_tool("make", "make")
    done = subprocess.run(
        [make, "--no-print-directory", "demo", f"ARGS=--workdir {tmp_path / 'demo'}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(
        r"Verdict: STROKE (NOT )?SUSPECTED \(probability [01]\.\d{3}\)", done.stdout
    ), done.stdout
    match = re.search(r"Structured Report: (\S+)", done.stdout)
    assert match, done.stdout
    assert Path(match.group(1)).is_file()
    seconds = float(re.search(r"Finished in ([\d.]+) s", done.stdout).group(1))  # type: ignore[union-attr]
    print(f"demo took {seconds:.1f} s")
