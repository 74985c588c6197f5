"""Evaluation figures (matplotlib, Agg backend): ROC, confusion matrices, calibration."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

logger = logging.getLogger(__name__)

Curves = Mapping[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]
"""Named (labels, scores) pairs, e.g. ``{"slice": ..., "series": ...}``."""


def plot_roc(curves: Curves, path: Path) -> Path:
    """ROC curves, one line per named (labels, scores) pair."""
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    for name, (labels, scores) in curves.items():
        if np.unique(labels).size < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        axes.plot(fpr, tpr, label=name)
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1), ylim=(0, 1))
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="lower right")
    else:  # every curve had one class only: there is no ROC to draw
        axes.text(0.5, 0.5, "one class only: no ROC", ha="center", va="center")
    return _save(figure, path)


def plot_confusion(matrices: Mapping[str, Mapping[str, int]], path: Path) -> Path:
    """Confusion matrices side by side; each is a ``{tn, fp, fn, tp}`` mapping."""
    figure, axes_list = plt.subplots(1, len(matrices), figsize=(3.6 * len(matrices), 3.4))
    for axes, (name, counts) in zip(np.atleast_1d(axes_list), matrices.items(), strict=True):
        grid = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
        axes.imshow(grid, cmap="Blues")
        for (row, column), value in np.ndenumerate(grid):
            axes.text(column, row, str(int(value)), ha="center", va="center")
        axes.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=["normal", "stroke"],
            yticklabels=["normal", "stroke"],
            xlabel="predicted",
            ylabel="true",
            title=name,
        )
    return _save(figure, path)


def plot_calibration(curves: Curves, path: Path, *, bins: int = 10) -> Path:
    """Reliability diagram: observed positive rate per bin of predicted probability."""
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    edges = np.linspace(0.0, 1.0, bins + 1)
    for name, (labels, scores) in curves.items():
        which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
        centres, rates = [], []
        for b in range(bins):
            members = which == b
            if members.any():
                centres.append(float(scores[members].mean()))
                rates.append(float(labels[members].mean()))
        axes.plot(centres, rates, marker="o", label=name)
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set(
        xlabel="predicted probability",
        ylabel="observed stroke rate",
        title="Calibration",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    axes.legend(loc="upper left")
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    logger.debug("Wrote %s", path)
    return path
