"""Labelled CSV files (``validate``/``calibrate`` labels, ``outcomes import``): columns and labels.

Both files have one or more key columns and a ``label`` column (stroke / normal, 1 / 0,
true / false, case-insensitive). Column names are matched case-insensitively; a byte order mark
is ignored. Rows with an unrecognised label are reported, never guessed.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LABEL_COLUMN = "label"
LABEL_VALUES = {
    "stroke": True,
    "1": True,
    "true": True,
    "normal": False,
    "0": False,
    "false": False,
}
"""Accepted labels (case-insensitive) and what they mean."""


class SiteValidationError(Exception):
    """The input cannot be used at all (an empty folder, a labels file without columns)."""


@dataclass(frozen=True)
class LabelRow:
    """One row with a recognised label: its line, the label and its non-empty key values."""

    line: int
    stroke: bool
    keys: dict[str, str]
    """``{column: value}`` for the key columns with a value, in the caller's order."""


@dataclass(frozen=True)
class LabelRows:
    """The rows with a recognised label, the problems found, and how many rows were read."""

    rows: list[LabelRow]
    problems: list[str]
    total: int


def parse_label(text: str) -> bool | None:
    """``True`` for stroke / 1 / true, ``False`` for normal / 0 / false, else None."""
    return LABEL_VALUES.get(text.strip().lower())


def read_label_rows(path: Path, *, key_columns: Sequence[str], what: str) -> LabelRows:
    """Read a labelled CSV file with at least one of ``key_columns`` and a ``label`` column.

    Args:
        path: The CSV file.
        key_columns: The accepted key columns (lower case), most specific first.
        what: The file's name in messages, e.g. ``labels`` or ``outcomes``.

    Raises:
        SiteValidationError: The file is missing, or lacks a key or the label column.
    """
    if not path.is_file():
        raise SiteValidationError(f"The {what} file {path} does not exist.")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        reader.fieldnames = columns
        keys = [c for c in key_columns if c in columns]
        if not keys:
            raise SiteValidationError(
                f"The {what} file {path} has no key column: it needs one of "
                f"{', '.join(key_columns)} (found {', '.join(columns) or 'no columns'})."
            )
        if LABEL_COLUMN not in columns:
            raise SiteValidationError(
                f"The {what} file {path} has no '{LABEL_COLUMN}' column "
                "(stroke / normal, 1 / 0, true / false)."
            )
        rows: list[LabelRow] = []
        problems: list[str] = []
        total = 0
        for line, row in enumerate(reader, start=2):
            total += 1
            raw = (row.get(LABEL_COLUMN) or "").strip()
            stroke = parse_label(raw)
            if stroke is None:
                problems.append(
                    f"line {line}: label {raw!r} is not recognised "
                    "(use stroke / normal, 1 / 0 or true / false); the row is ignored"
                )
                continue
            values = {c: (row.get(c) or "").strip() for c in keys}
            rows.append(LabelRow(line, stroke, {c: v for c, v in values.items() if v}))
    return LabelRows(rows, problems, total)
