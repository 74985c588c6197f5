"""Radiologists' slice labels (``slice-labels.csv``) joined onto the manifest's records.

A row names its JPEG by ``path`` (relative to the data folder, as in the manifest); the chosen
column holds 0/1. Records the file does not label keep ``slice_label=None`` and train on their
patient's label. The patient label stays the series truth either way.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from model.training.data import DataError, SliceRecord

logger = logging.getLogger(__name__)

SLICE_LABEL_COLUMNS = ("haemorrhage_by_mask", "haemorrhage_by_rank")
"""The 0/1 columns of the data set's ``slice-labels.csv``; ``by_mask`` is the default."""

HAEMORRHAGE_TYPES = (
    "epidural",
    "subdural",
    "subarachnoid",
    "intraparenchymal",
    "intraventricular",
)
"""CT-ICH's haemorrhage types (``types_by_rank``: joined by ``+``; empty for none)."""


def _key(path: Path | str) -> str:
    """``Stroke/66 (12).jpg``: the class folder and file name, the way both files name a JPEG."""
    parts = Path(path).parts
    return "/".join(parts[-2:])


def read_slice_table(path: Path) -> list[dict[str, str]]:
    """The rows of a slice-labels CSV.

    Raises:
        DataError: If the file is missing or has no ``path`` column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"The slice-labels file {path} does not exist.")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "path" not in (reader.fieldnames or ()):
            raise DataError(f"The slice-labels file {path} has no 'path' column.")
        return list(reader)


def read_slice_labels(path: Path, column: str) -> dict[str, int]:
    """``{class folder/file name: 0 or 1}`` from one column of a slice-labels CSV.

    Raises:
        DataError: If the column is missing or holds something other than 0/1.
    """
    rows = read_slice_table(path)
    if rows and column not in rows[0]:
        raise DataError(
            f"The slice-labels file {path} has no column {column!r}; it has "
            f"{', '.join(sorted(rows[0]))}."
        )
    labels: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        value = row[column].strip()
        if value not in ("0", "1"):
            raise DataError(f"Line {line} of {path}: {column} is {value!r}, not 0 or 1.")
        labels[_key(row["path"])] = int(value)
    return labels


def with_slice_labels(
    records: Sequence[SliceRecord], path: Path, column: str = SLICE_LABEL_COLUMNS[0]
) -> list[SliceRecord]:
    """``records`` with their slice labels from ``path`` (None where the file has none).

    Raises:
        DataError: If the file labels none of the records (the wrong file for this data).
    """
    labels = read_slice_labels(path, column)
    labelled = [replace(r, slice_label=labels.get(_key(r.path))) for r in records]
    found = sum(r.slice_label is not None for r in labelled)
    if records and found == 0:
        raise DataError(f"The slice-labels file {path} labels none of the {len(records)} slices.")
    logger.info(
        "Slice labels (%s) for %s of %s slices, %s positive",
        column,
        found,
        len(records),
        sum(r.slice_label == 1 for r in labelled),
    )
    return labelled


def slice_types(records: Sequence[SliceRecord], path: Path) -> list[set[str]]:
    """Each record's haemorrhage types (``types_by_rank``); empty where none or unlabelled."""
    rows = {_key(row["path"]): row.get("types_by_rank", "") for row in read_slice_table(path)}
    return [{t for t in rows.get(_key(r.path), "").split("+") if t.strip()} for r in records]


def slice_truth(records: Sequence[SliceRecord], positive: str = "stroke") -> list[int]:
    """Each record's 0/1 slice truth: its slice label, else its patient's label."""
    return [int(r.training_label() == positive) for r in records]
