"""Which CT window turns a real head CT into images like the Kaggle JPEGs?

The Kaggle slices are 8-bit images that were windowed before export; their HU are lost. This
script compares the grey-level histogram of intracranial pixels of the Kaggle normal slices with
that of the real GE head CT (``dicom/ge-head-ct``) windowed on a grid of centres and widths,
and ranks the windows by the Wasserstein-1 distance (in grey levels) and the Kolmogorov-Smirnov
statistic between the two histograms.

Intracranial pixels are found the same way in both: the skull (8-bit value >= 250 in the JPEGs,
HU >= 300 in the CT) is filled, and the skull itself plus a 2-pixel rim is removed; slices where
that leaves under 2 % of the image (open skull base) are skipped.

Usage::

    python benchmarks/window_match.py [--data ../shared/data] [--top 15]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image
from scipy import ndimage

from model.dicom import dataset_to_hu
from model.spec import WINDOW_PRESETS

BINS = 256
JPEG_BONE = 250
CT_BONE_HU = 300.0
MIN_AREA_FRACTION = 0.02
WORK_SIZE = 325
"""JPEGs are reduced 650 -> 325 px (CT 512 -> 256) to keep the run short; both by 2."""


def intracranial_mask(bone: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_] | None:
    """Inside of the skull minus the skull and a 2-pixel rim; None where the ring is open."""
    filled = ndimage.binary_fill_holes(bone)
    inside: npt.NDArray[np.bool_] = filled & ~ndimage.binary_dilation(bone, iterations=2)
    inside = ndimage.binary_opening(inside, iterations=2)
    if inside.mean() < MIN_AREA_FRACTION:
        return None
    return inside


def kaggle_histogram(folder: Path) -> tuple[npt.NDArray[np.float64], int, int]:
    """Normalised histogram of intracranial grey levels of the Normal JPEGs."""
    counts = np.zeros(BINS, dtype=np.float64)
    used = total = 0
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["label"].lower() == "normal"]
    for row in rows:
        total += 1
        with Image.open(folder / row["path"]) as image:
            grey = image.convert("L").reduce(2)
        pixels = np.asarray(grey, dtype=np.uint8)
        mask = intracranial_mask(pixels >= JPEG_BONE)
        if mask is None:
            continue
        used += 1
        counts += np.bincount(pixels[mask], minlength=BINS)
    return counts / counts.sum(), used, total


def ct_intracranial_hu(folder: Path) -> tuple[npt.NDArray[np.float32], int, int]:
    """Intracranial HU values of every slice of a DICOM series (2x reduced)."""
    values: list[npt.NDArray[np.float32]] = []
    files = sorted(folder.glob("*.dcm"))
    for path in files:
        hu = dataset_to_hu(pydicom.dcmread(path)).astype(np.float32)
        hu = hu[: hu.shape[0] // 2 * 2, : hu.shape[1] // 2 * 2]
        hu = hu.reshape(hu.shape[0] // 2, 2, hu.shape[1] // 2, 2).mean(axis=(1, 3))
        mask = intracranial_mask(hu >= CT_BONE_HU)
        if mask is not None:
            values.append(hu[mask])
    return np.concatenate(values), len(values), len(files)


def windowed_histogram(
    hu: npt.NDArray[np.float32], center: float, width: float
) -> npt.NDArray[np.float64]:
    """Normalised histogram of 8-bit values after windowing, as an exporter would round them."""
    unit = np.clip((hu - (center - width / 2.0)) / width, 0.0, 1.0)
    levels = np.rint(unit * 255.0).astype(np.int64)
    counts = np.bincount(levels, minlength=BINS).astype(np.float64)
    histogram: npt.NDArray[np.float64] = counts / counts.sum()
    return histogram


def distances(
    reference: npt.NDArray[np.float64], candidate: npt.NDArray[np.float64]
) -> tuple[float, float]:
    """(Wasserstein-1 in grey levels, Kolmogorov-Smirnov) between two histograms."""
    difference = np.cumsum(reference) - np.cumsum(candidate)
    return float(np.abs(difference).sum()), float(np.abs(difference).max())


def summary(histogram: npt.NDArray[np.float64]) -> str:
    """Mean, median and the shares at 0 and 255 of a histogram."""
    levels = np.arange(BINS)
    mean = float((histogram * levels).sum())
    median = int(np.searchsorted(np.cumsum(histogram), 0.5))
    return (
        f"mean {mean:6.1f}  median {median:3d}  at 0: {histogram[0]:6.2%}  "
        f"at 255: {histogram[255]:6.2%}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the window ranking."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get(
        "STROKE_TRIAGE_SHARED_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser.add_argument("--data", type=Path, default=Path(default))
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    kaggle = args.data / "brain-stroke-ct"
    ct = args.data / "dicom" / "ge-head-ct"
    if not (kaggle / "manifest.csv").is_file() or not ct.is_dir():
        print(f"shared data not found under {args.data}; set STROKE_TRIAGE_SHARED_DATA")
        return 2
    started = time.perf_counter()
    reference, used, total = kaggle_histogram(kaggle)
    print(f"Kaggle Normal slices with a closed skull: {used} of {total}")
    hu, ct_used, ct_total = ct_intracranial_hu(ct)
    print(f"GE head CT slices with a closed skull: {ct_used} of {ct_total} ({hu.size} pixels)")
    print(f"Kaggle intracranial histogram: {summary(reference)}")
    results: list[tuple[float, float, float, float]] = []
    for center in np.arange(0.0, 100.1, 2.0):
        for width in np.arange(20.0, 400.1, 5.0):
            w1, ks = distances(reference, windowed_histogram(hu, center, width))
            results.append((w1, ks, float(center), float(width)))
    results.sort()
    print(f"\nGrid: centre 0..100 HU step 2, width 20..400 HU step 5 ({len(results)} windows)")
    print(f"{'rank':>4} {'centre':>7} {'width':>6} {'W1 (grey)':>10} {'KS':>6}")
    for rank, (w1, ks, center, width) in enumerate(results[: args.top], start=1):
        print(f"{rank:>4} {center:7.0f} {width:6.0f} {w1:10.2f} {ks:6.3f}")
    best = results[0]
    print(f"\nBest window: centre {best[2]:.0f} HU, width {best[3]:.0f} HU")
    print(f"  windowed CT histogram: {summary(windowed_histogram(hu, best[2], best[3]))}")
    by_ks = min(results, key=lambda r: r[1])
    print(
        f"Best by KS alone: centre {by_ks[2]:.0f} HU, width {by_ks[3]:.0f} HU (KS {by_ks[1]:.3f})"
    )
    print("\nPresets:")
    for name, window in WINDOW_PRESETS.items():
        w1, ks = distances(reference, windowed_histogram(hu, window.center, window.width))
        position = 1 + sum(r[0] < w1 for r in results)
        print(
            f"  {name:14s} {window.center:5.0f}/{window.width:<5.0f} W1 {w1:7.2f}  KS {ks:5.3f}  "
            f"(would rank {position})"
        )
    print(f"\n({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
