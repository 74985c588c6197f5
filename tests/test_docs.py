"""The README says what the code does."""

from __future__ import annotations

from stroke_triage.settings_doc import settings_table
from tests.helpers import REPO_ROOT


def test_readme_settings_table_is_current() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("<!-- settings:start -->\n") + len("<!-- settings:start -->\n")
    end = readme.index("<!-- settings:end -->")
    assert readme[start:end].strip() == settings_table().strip(), (
        "README settings table is stale: regenerate it with `stroke-triage settings --table`"
    )


def test_readme_quick_start_is_two_make_commands() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
