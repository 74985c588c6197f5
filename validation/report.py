"""The ``validate`` report: report.json, report.md and the ROC, calibration and confusion plots."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.evaluation.plots import plot_calibration, plot_confusion, plot_roc


@dataclass(frozen=True)
class WrittenReport:
    """The files written."""

    markdown: Path
    json: Path
    figures: list[Path]


def write_report(
    document: dict[str, Any], *, labels: np.ndarray, scores: np.ndarray, output_dir: Path
) -> WrittenReport:
    """Write the figures (if any series was scored), report.json and report.md."""
    output_dir.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    if labels.size:
        curves = {"series": (labels, scores)}
        figures = [
            plot_roc(curves, output_dir / "roc.png"),
            plot_calibration(curves, output_dir / "calibration.png"),
            plot_confusion({"series": document["confusion"]}, output_dir / "confusion.png"),
        ]
    json_path = output_dir / "report.json"
    json_path.write_text(json.dumps(document, indent=2, allow_nan=True) + "\n")
    markdown_path = output_dir / "report.md"
    markdown_path.write_text(render_markdown(document, figures))
    return WrittenReport(markdown_path, json_path, figures)


def format_number(value: float | None) -> str:
    """Three decimals, or ``n/a`` for a missing or non-finite value."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _bullets(title: str, items: Iterable[str]) -> list[str]:
    listed = [f"- {item}" for item in items]
    return [f"## {title}", "", *(listed or ["none"]), ""]


def render_markdown(document: dict[str, Any], figures: Sequence[Path]) -> str:
    """The report as Markdown: metrics, confusion matrix, counts, problems, per-series table."""
    model = document["model"]
    lines = [
        "# Site validation",
        "",
        f"Model {model['name']} {model['version']} (sha256 {model['sha256'][:12]}), "
        f"threshold {document['threshold']:.4f}; {document['series_scored']} labelled series "
        f"scored ({document['positives']} stroke, {document['negatives']} normal); "
        f"data fingerprint {document['data_fingerprint'][:12]}.",
        "",
        *([f"**Warning: {document['warning']}**", ""] if document.get("warning") else []),
        "| metric | value | 95 % interval |",
        "|---|---|---|",
    ]
    for name, value in document["metrics"].items():
        interval = document["intervals_95"].get(name)
        shown = (
            "not shown (too few series)"
            if interval is None
            else f"{format_number(interval[0])} - {format_number(interval[1])}"
        )
        lines.append(f"| {name} | {format_number(value)} | {shown} |")
    confusion = document["confusion"] or {"tn": 0, "fp": 0, "fn": 0, "tp": 0}
    lines += [
        "",
        "## Confusion matrix at the checkpoint's threshold",
        "",
        "| | predicted normal | predicted stroke |",
        "|---|---|---|",
        f"| normal | {confusion['tn']} | {confusion['fp']} |",
        f"| stroke | {confusion['fn']} | {confusion['tp']} |",
        "",
        "## Counts",
        "",
        *(f"- {name.replace('_', ' ')}: {count}" for name, count in document["counts"].items()),
        "",
        *(f"![{path.stem}]({path.name})" for path in figures),
        "",
    ]
    lines += _bullets("Unreadable files", document["unreadable_files"])
    lines += _bullets("Label problems", document["label_problems"])
    lines += _bullets("Keys that match no series", document["unmatched_keys"])
    lines += [
        "## Series",
        "",
        "| key | series | label | probability | verdict | reason |",
        "|---|---|---|---|---|---|",
    ]
    for row in document["series"]:
        label = {True: "stroke", False: "normal", None: ""}[row["label"]]
        lines.append(
            f"| {row['key']} | {row['series_instance_uid']} | {label} | "
            f"{format_number(row['probability'])} | {row['verdict']} | {row['reason']} |"
        )
    return "\n".join(lines) + "\n"
