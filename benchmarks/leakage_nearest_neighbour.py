"""How much of the paper's figure a lookup with no learning at all reaches.

Each test slice takes the label of its most similar training slice (cosine similarity of the
mean-centred pixels, 64 px, no model, no training). Under the paper's random slice split the
nearest training slice is almost always a neighbouring slice of the same patient, so the label
comes for free; under a patient-grouped split it has to come from the image.

Splits, all on the same slices and pixels:

- ``paper split``: ``model.training.data.random_slice_split`` with seed 0, the very 80/10/10
  split of ``stroke-triage cross-validate --protocol paper`` (test = its 10 %, train = its 80 %);
- ``random 5-fold``: slices shuffled into 5 folds (stratified by label), every slice tested once;
- ``patient-grouped 5-fold``: ``model.training.data.patient_group_kfold``, the grouped
  protocol's folds.

Usage::

    python benchmarks/leakage_nearest_neighbour.py [--data ../shared/data/brain-stroke-ct]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from model.training.data import (
    SliceRecord,
    decode_slice,
    load_records,
    patient_group_kfold,
    random_slice_split,
)

SIZE = 64
FOLDS = 5

Split = tuple[list[int], list[int]]


def features(records: Sequence[SliceRecord]) -> npt.NDArray[np.float32]:
    """Mean-centred, unit-length pixel vectors of every slice."""
    pixels = np.stack([decode_slice(r.path, SIZE).astype(np.float32).ravel() for r in records])
    pixels -= pixels.mean(axis=1, keepdims=True)
    pixels /= np.maximum(np.linalg.norm(pixels, axis=1, keepdims=True), 1e-6)
    return pixels


def random_folds(labels: npt.NDArray[np.int64], seed: int = 0) -> Iterator[Split]:
    """Stratified random slice folds (the paper's kind of split, repeated)."""
    rng = random.Random(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = [int(i) for i in np.flatnonzero(labels == label)]
        rng.shuffle(members)
        for rank, index in enumerate(members):
            fold_of[index] = rank % FOLDS
    for fold in range(FOLDS):
        yield list(np.flatnonzero(fold_of != fold)), list(np.flatnonzero(fold_of == fold))


def evaluate(
    x: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    patients: npt.NDArray[np.str_],
    splits: Sequence[Split],
) -> tuple[float, float, int]:
    """Accuracy, share of test slices whose nearest neighbour is their own patient, slices."""
    correct = same_patient = total = 0
    for train, test in splits:
        nearest = np.asarray(train)[np.argmax(x[test] @ x[train].T, axis=1)]
        correct += int((labels[nearest] == labels[test]).sum())
        same_patient += int((patients[nearest] == patients[test]).sum())
        total += len(test)
    return correct / total, same_patient / total, total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/data/brain-stroke-ct"), help="Kaggle set"
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    records = load_records(args.data)
    x = features(records)
    labels = np.array([int(r.label == "stroke") for r in records], dtype=np.int64)
    patients = np.array([r.patient for r in records])
    train, _, test = random_slice_split(records, seed=0)
    rows = [
        ("paper split (seed 0), 80 % train / 10 % test", [(train, test)]),
        ("random 5-fold (slices)", list(random_folds(labels))),
        (
            "patient-grouped 5-fold",
            [(list(a), list(b)) for a, b in patient_group_kfold(records, FOLDS, seed=0)],
        ),
    ]
    print(f"1-nearest-neighbour on {SIZE} px pixels, {len(records)} slices, no training\n")
    print("| split | test slices | accuracy | nearest slice from the same patient |")
    print("|---|---|---|---|")
    majority = max(labels.mean(), 1 - labels.mean())
    for name, splits in rows:
        accuracy, same, total = evaluate(x, labels, patients, splits)
        print(f"| {name} | {total} | {accuracy:.2%} | {same:.2%} |")
    print(f"\nmajority-class accuracy: {majority:.2%}; {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
