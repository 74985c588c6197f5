"""Print the model card's ablation rows from the ``crossval.json`` of grouped runs.

Each row: pooled out-of-fold series AUC with its 95 % interval, sensitivity and specificity at
each fold's own stored threshold, pooled slice AUC, and the series AUC under each aggregation
rule (top-k mean / mean / max) from the same out-of-fold slice probabilities.

Usage::

    python benchmarks/ablation_rows.py runs/i5/cv-vit64p8-mirror/crossval.json [...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def row(path: Path) -> str:
    """One Markdown table row for one run."""
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if result.get("protocol") != "grouped":
        raise SystemExit(f"{path} is not a grouped cross-validation result.")
    pooled = result["pooled_series"]
    metrics, ci = pooled["metrics"], pooled["ci95"]
    tp, fn, tn, fp = (int(metrics[key]) for key in ("tp", "fn", "tn", "fp"))
    rules = result["pooled_series_auc_by_rule"]
    by_rule = " / ".join(f"{rules[rule]['roc_auc']:.3f}" for rule in ("top_k_mean", "mean", "max"))
    config = result["config"]
    low, high = ci["roc_auc"]
    name = path.parent.name if path.name == "crossval.json" else path.stem
    return (
        f"| `{name}` | {config['epochs']} | {config['input_size']} "
        f"| {metrics['roc_auc']:.3f} ({low:.3f}-{high:.3f}) "
        f"| {100 * tp / (tp + fn):.2f} % ({tp}/{tp + fn}) "
        f"| {100 * tn / (tn + fp):.2f} % ({tn}/{tn + fp}) "
        f"| {result['pooled_slice_auc']:.3f} | {by_rule} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="crossval.json files")
    args = parser.parse_args(argv)
    print(
        "| run | epochs | input | series AUC (95 % CI) | sensitivity | specificity "
        "| slice AUC | AUC by rule: top-k / mean / max |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for path in args.results:
        print(row(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
