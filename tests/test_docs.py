"""The README and docs/ say what the code does: settings, commands, links, TOML examples."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
from pathlib import Path

import pytest

from stroke_triage.cli import build_parser
from stroke_triage.settings_doc import settings_table
from tests.helpers import REPO_ROOT
from tests.settings_names import (
    NOT_SETTINGS,
    clear_setting_variables,
    load_toml_settings,
    setting_variables,
)

README = REPO_ROOT / "README.md"
DOCS = [README, *sorted((REPO_ROOT / "docs").rglob("*.md"))]
START, END = "<!-- settings:start -->\n", "<!-- settings:end -->"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)


def _name(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def _blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def test_settings_table_is_current() -> None:
    holders = [path for path in DOCS if START in path.read_text()]
    assert len(holders) == 1, f"one page holds the settings table, not {holders}"
    text = holders[0].read_text()
    table = text[text.index(START) + len(START) : text.index(END)]
    assert table.strip() == settings_table().strip(), (
        f"the settings table in {_name(holders[0])} is stale: regenerate it with "
        "`stroke-triage settings --table`"
    )


def test_readme_quick_start_is_two_make_commands() -> None:
    readme = README.read_text()
    block = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_readme_is_short_and_starts_with_the_site_install() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 250
    install = lines.index("## A site install in five steps")
    assert install < 50, "a site admin finds the install steps on the first screen"


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    anchors: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        anchor, number = slug, 0
        while anchor in anchors:
            number += 1
            anchor = f"{slug}-{number}"
        anchors.add(anchor)
    return anchors


def test_every_relative_link_points_to_an_existing_file() -> None:
    broken = []
    for page in DOCS:
        for target in LINK.findall(_prose(page.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto:
            path_part, _, anchor = target.partition("#")
            linked = (page.parent / path_part).resolve() if path_part else page
            if not linked.exists():
                broken.append(f"{_name(page)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked.read_text()):
                broken.append(f"{_name(page)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def _command_lines(block: str) -> list[str]:
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _cli_arguments(words: list[str]) -> list[str] | None:
    """The arguments of a `stroke-triage` command line, or None when it runs something else.

    The command may follow variable assignments, `sudo -u USER` or `docker compose ... exec
    SERVICE`.
    """
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words = words[1:]
    if words[:1] == ["sudo"]:
        words = words[1:]
        while words and words[0].startswith("-"):
            words = words[2:] if words[0] in ("-u", "-g") else words[1:]
    if words[:2] == ["docker", "compose"] and ("exec" in words or "run" in words):
        words = words[words.index("exec" if "exec" in words else "run") + 1 :]
        while words and words[0].startswith("-"):
            words = words[1:]
        words = words[1:]  # the service
    if words and Path(words[0]).name == "stroke-triage":
        return words[1:]
    return None


def test_documented_commands_parse() -> None:
    """Every `stroke-triage ...` line of a shell block is a command the CLI accepts."""
    seen, refused = 0, []
    for page in DOCS:
        for block in _blocks(page.read_text(), "sh"):
            for line in _command_lines(block):
                argv = _cli_arguments(shlex.split(line, comments=True))
                if argv is None:
                    continue
                seen += 1
                errors = io.StringIO()
                try:
                    with contextlib.redirect_stderr(errors):
                        build_parser().parse_args(argv)
                except SystemExit:
                    refused.append(f"{_name(page)}: {line.strip()}\n  {errors.getvalue()}")
    assert seen >= 20
    assert not refused, "\n".join(refused)


def test_documented_variables_and_setting_names_exist() -> None:
    variables = setting_variables()
    wrong = []
    for page in DOCS:
        text = page.read_text()
        for variable in set(re.findall(r"\bSTROKE_TRIAGE_[A-Z0-9_]*[A-Z0-9]", text)):
            if variable not in variables | NOT_SETTINGS:
                wrong.append(f"{_name(page)}: {variable}")
        if page.parent.name == "evaluations" or page.name == "benchmarks.md":
            continue  # records of earlier runs, naming the modules of their day
        dotted = re.findall(r"`(listener|worker|api)\.([a-z_]+)", text)
        dotted += re.findall(r"`\[(listener|worker|api)\] ([a-z_]+)", text)
        for table, name in set(dotted):
            if table != "api" and importlib.util.find_spec(f"{table}.{name}") is not None:
                continue  # a module, such as `worker.pipeline.process_series`
            if f"STROKE_TRIAGE_{table.upper()}__{name.upper()}" not in variables:
                wrong.append(f"{_name(page)}: {table}.{name}")
    assert not wrong, "\n".join(sorted(wrong))


def test_toml_examples_are_real_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_setting_variables(monkeypatch)
    checked = 0
    for page in DOCS:
        for number, block in enumerate(_blocks(page.read_text(), "toml")):
            path = tmp_path / f"{page.stem}-{number}.toml"
            path.write_text(block)
            _, unknown = load_toml_settings(path)
            assert not unknown, f"{_name(page)}, TOML block {number + 1}: {unknown}"
            checked += 1
    assert checked >= 2
