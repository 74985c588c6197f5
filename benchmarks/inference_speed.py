"""CPU inference speed of a checkpoint in fp32 and bf16, and whether the verdicts agree.

Runs every patient of a slice folder (default: the Kaggle training set) through the checkpoint
twice, once per precision, timing only the forward passes, then compares each series verdict
(aggregated probability against the checkpoint's threshold).

Usage::

    python benchmarks/inference_speed.py --checkpoint runs/baseline [--data DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from model.aggregate import aggregate
from model.checkpoint import DEFAULT_CHECKPOINT_DIR, load_checkpoint
from model.device import cpu_supports_bf16
from model.inference import Classifier
from model.training.data import SliceRecord, decode_slice, group_by_patient, load_records
from model.training.evaluate import predict_records


def main(argv: Sequence[str] | None = None) -> int:
    """Prints slices/s per precision, their ratio and the verdict agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = os.environ.get(
        "STROKE_TRIAGE_SHARED_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT_DIR)
    parser.add_argument("--data", type=Path, default=Path(shared) / "brain-stroke-ct")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patients", type=int, default=None, help="only the first N patients")
    parser.add_argument("--series-slices", type=int, default=40, help="slices of the timed series")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.data / "manifest.csv").is_file():
        print(f"no manifest.csv in {args.data}; set --data or STROKE_TRIAGE_SHARED_DATA")
        return 2
    records = load_records(args.data)
    if args.patients:
        keep = set(sorted(group_by_patient(records))[: args.patients])
        records = [r for r in records if r.patient in keep]
    loaded = load_checkpoint(args.checkpoint)
    spec = loaded.spec
    print(
        f"checkpoint {spec.version} ({spec.architecture}, {spec.input_size} px), "
        f"{len(records)} slices of {len(group_by_patient(records))} patients, "
        f"{torch.get_num_threads()} threads, native bf16: {cpu_supports_bf16()}"
    )
    speeds: dict[str, float] = {}
    verdicts: dict[str, np.ndarray] = {}
    probabilities: dict[str, np.ndarray] = {}
    patients = group_by_patient(records)
    for precision in ("fp32", "bf16"):
        classifier = Classifier(
            loaded, device="cpu", precision=precision, batch_size=args.batch_size
        )
        probs, speeds[precision] = predict_records(classifier, records)
        probabilities[precision] = probs
        series = np.array(
            [
                aggregate(probs[idx], rule=spec.aggregation.rule, k=spec.aggregation.k)
                for idx in patients.values()
            ]
        )
        verdicts[precision] = series >= spec.threshold
        seconds = _series_seconds(classifier, records, slices=args.series_slices)
        print(
            f"{precision}: {speeds[precision]:8.1f} slices/s (forward only); one "
            f"{args.series_slices}-slice series from HU, preprocessing included: {seconds:.2f} s"
        )
    agree = int((verdicts["fp32"] == verdicts["bf16"]).sum())
    difference = float(np.max(np.abs(probabilities["fp32"] - probabilities["bf16"])))
    print(f"bf16/fp32 speed ratio: {speeds['bf16'] / speeds['fp32']:.2f}")
    print(f"series verdicts agreeing: {agree} of {len(patients)}")
    print(f"largest slice probability difference: {difference:.4f}")
    return 0 if agree == len(patients) else 1


def _series_seconds(
    classifier: Classifier, records: Sequence[SliceRecord], *, slices: int
) -> float:
    """Best of three: one series of ``slices`` JPEGs turned into HU (slope 150/255, intercept
    -39, the data README's wrapping), through ``predict_hu_stack`` (preprocessing included)."""
    stack = np.stack([decode_slice(r.path, 650) for r in records[:slices]]).astype(np.float32)
    hu = stack * np.float32(150.0 / 255.0) - np.float32(39.0)
    if hu.shape[0] < slices:  # a short data folder: repeat its slices
        hu = np.resize(hu, (slices, *hu.shape[1:]))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        classifier.predict_hu_stack(hu)
        best = min(best, time.perf_counter() - started)
    return best


if __name__ == "__main__":
    sys.exit(main())
