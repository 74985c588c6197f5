"""`make demo`, the README's first command, run as a user would run it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import db.tokens
from console.tokens import token_sha256
from db.engine import create_engine_for, make_session_factory
from model.checkpoint import DEFAULT_CHECKPOINT_DIR
from model.spec import ModelSpec
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
    # What the shipped model can see, from its spec, before anything else.
    finding = ModelSpec.from_json((DEFAULT_CHECKPOINT_DIR / "spec.json").read_text()).finding
    printed = done.stdout.splitlines()
    assert printed[1].startswith("Model "), done.stdout  # after make's own echo of the command
    assert f"detects {finding.meaning} ({finding.scheme} {finding.value}" in done.stdout
    name = re.escape(finding.short_name.upper())
    assert re.search(
        rf"Verdict: {name} (NOT )?SUSPECTED \(probability [01]\.\d\d\)\n", done.stdout
    ), done.stdout
    assert "synthetic phantom, not a patient" in done.stdout
    assert "it is no diagnosis" in done.stdout
    match = re.search(r"Structured Report: (\S+)", done.stdout)
    assert match, done.stdout
    assert Path(match.group(1)).is_file()
    # The admin console: its URL and a read token, printed while it is up (the demo checks
    # /health before printing), and how to serve its results again afterwards.
    assert re.search(r"Dashboard \(up while the demo runs\): http://127\.0\.0\.1:\d+/", done.stdout)
    token = re.search(r"Read token \(log in with it\): (\S+)", done.stdout)
    assert token, done.stdout
    engine = create_engine_for(f"sqlite:///{tmp_path / 'demo' / 'data' / 'stroke-triage.db'}")
    with make_session_factory(engine)() as session:
        names = {t.name: t for t in db.tokens.list_tokens(session=session)}
    engine.dispose()
    assert str(names["demo"].scope) == "read"
    assert names["demo"].token_sha256 == token_sha256(token.group(1))
    assert "stroke-triage api" in done.stdout
    seconds = float(re.search(r"Finished in ([\d.]+) s", done.stdout).group(1))  # type: ignore[union-attr]
    print(f"demo took {seconds:.1f} s")
