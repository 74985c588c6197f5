"""CT-ICH haemorrhage types, slice level: a logistic head per type on frozen Lite0 features.

Patient-grouped 5-fold CV (the folds of ``stroke-triage cross-validate``) of one-vs-rest
logistic regressions on the globally pooled ImageNet EfficientNet-Lite0 map (the hybrid ViT's
frozen backbone, features cached as ``train`` caches them). The slice truth is
``types_by_rank`` of ``slice-labels.csv``; AUC intervals resample patients. Counts are small:
read the intervals.

    PYTHONPATH=. nice .venv/bin/python benchmarks/haemorrhage_types.py \\
        --data ../shared/data/brain-stroke-ct --output runs/types
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model.architectures import HYBRID_LITE0
from model.evaluation.metrics import percentile_intervals
from model.evaluation.slice_metrics import fast_auc
from model.training.config import TrainConfig
from model.training.data import load_records, patient_group_kfold
from model.training.hybrid import prepare, through_frozen_tail
from model.training.slice_labels import HAEMORRHAGE_TYPES, slice_types


def _auc_with_interval(
    labels: np.ndarray, scores: np.ndarray, patients: list[str], *, resamples: int
) -> tuple[float, float, float]:
    index: dict[str, list[int]] = {}
    for i, p in enumerate(patients):
        index.setdefault(p, []).append(i)
    members = list(index.values())
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(resamples):
        chosen = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        samples.append(fast_auc(labels[chosen], scores[chosen]))
    low, high = percentile_intervals({"auc": samples}, confidence=0.95)["auc"]
    return fast_auc(labels, scores), low, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--c", type=float, default=0.05, help="inverse L2 strength")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    labels_file = args.data / "slice-labels.csv"
    config = TrainConfig(
        data_dir=args.data,
        architecture=HYBRID_LITE0,
        input_size=args.input_size,
        model_kwargs={"embed_dim": 192, "depth": 1, "num_heads": 3},
        slice_labels=labels_file,
    )
    prepared = prepare(config, load_records(args.data))
    records = prepared.records
    maps = through_frozen_tail(prepared)
    rows = maps.rows(records)
    features = maps.features[rows].float().mean(dim=(2, 3)).numpy()
    types = slice_types(records, labels_file)
    patients = [r.patient for r in records]
    targets = {"any (by rank)": np.array([int(bool(t)) for t in types])}
    for name in HAEMORRHAGE_TYPES:
        targets[name] = np.array([int(name in t) for t in types])
    folds = patient_group_kfold(records, n_splits=5, seed=0)
    results: list[dict[str, Any]] = []
    for name, y in targets.items():
        oof = np.zeros(len(records))
        for train_idx, test_idx in folds:
            if y[train_idx].sum() == 0:
                continue
            model = make_pipeline(StandardScaler(), LogisticRegression(C=args.c, max_iter=2000))
            model.fit(features[train_idx], y[train_idx])
            oof[test_idx] = model.predict_proba(features[test_idx])[:, 1]
        auc, low, high = _auc_with_interval(y, oof, patients, resamples=args.bootstrap)
        results.append(
            {
                "type": name,
                "positive_slices": int(y.sum()),
                "patients": len({p for p, v in zip(patients, y, strict=True) if v}),
                "slice_auc": auc,
                "ci95": [low, high],
            }
        )
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "types.json").write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    lines = ["| type | positive slices | patients | slice AUC (95 % CI) |", "|---|---|---|---|"]
    for item in results:
        lines.append(
            f"| {item['type']} | {item['positive_slices']} | {item['patients']} | "
            f"{item['slice_auc']:.3f} ({item['ci95'][0]:.3f}-{item['ci95'][1]:.3f}) |"
        )
    (args.output / "types.md").write_text("\n".join(lines) + "\n", "utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
