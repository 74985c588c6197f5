"""What issue 26 adds to a report's way, side by side with what was there before.

The listener, when a study goes quiet: the per-series selection it always did
(``select_instances`` on every header) beside what the study choice adds (``series_facts`` on
the selected stack, ``choose_series`` over the study's series). The worker, per report: the
SR's build (highdicom) beside the preview's render (decode, window, JPEG). On a real series
(the GE head CT by default), median of ``--runs`` runs, with the load average.

    .venv/bin/python benchmarks/study_choice.py [--runs 20] [--series FOLDER]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pydicom

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicom_edge import choose_series, select_instances, series_facts  # noqa: E402
from worker.preview import PreviewText, render_preview  # noqa: E402
from worker.report import AlgorithmInfo, Finding, build_structured_report  # noqa: E402

DEFAULT_SERIES = (
    Path(os.environ.get("STROKE_TRIAGE_SHARED_DATA", REPO.parent / "shared" / "data"))
    / "dicom"
    / "ge-head-ct"
)


def median_ms(action: Callable[[], object], runs: int) -> tuple[float, float, float]:
    """Median, min and max milliseconds of ``runs`` calls (after one warm-up call)."""
    action()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), min(times), max(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
    paths = sorted(args.series.glob("*.dcm"))
    if not paths:
        print(f"No DICOM files in {args.series}: set --series or STROKE_TRIAGE_SHARED_DATA.")
        return 2
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
    datasets = [pydicom.dcmread(path) for path in paths]
    selection = select_instances(headers, min_slices=5)
    stack = [headers[i] for i in selection.selected]
    facts = series_facts("2.25.1", stack)
    study = [
        replace(facts, series_instance_uid=f"2.25.{n}", kernel=kernel, slice_thickness_mm=t)
        for n, (kernel, t) in enumerate(
            [("STANDARD", 5.0), ("BONEPLUS", 5.0), ("STANDARD", 1.25), ("H70h", 1.0)]
        )
    ]
    top = [str(ds.SOPInstanceUID) for ds in datasets[10:14]]
    finding = Finding(probability=0.63, suspected=True, threshold=0.6, top_instance_uids=top)
    algorithm = AlgorithmInfo(
        name="vit-stroke", version="1.0.0", software_version="0", model_sha256="a" * 64
    )
    text = PreviewText("AI STROKE TRIAGE: SUSPECTED", 0.63, 0.6, "vit-stroke 1.0.0", "series 2")
    key_slices = datasets[10:14]
    rows: list[tuple[str, Callable[[], object]]] = [
        ("listener: select_instances (before)", lambda: select_instances(headers, min_slices=5)),
        ("listener: + series_facts (new)", lambda: series_facts("2.25.1", stack)),
        ("listener: + choose_series, 4 series (new)", lambda: choose_series(study, model_thickness_mm=5.0)),  # noqa: E501
        ("worker: SR build (before)", lambda: build_structured_report(source_datasets=datasets, finding=finding, algorithm=algorithm)),  # noqa: E501
        ("worker: preview render (new)", lambda: render_preview(key_slices, text)),
    ]  # fmt: skip
    load = os.getloadavg()
    print(f"{len(paths)} slices from {args.series}; {args.runs} runs; load {load[0]:.2f}")
    measured = {}
    for name, action in rows:
        med, low, high = median_ms(action, args.runs)
        measured[name] = med
        print(f"  {name:<44} {med:8.2f} ms  ({low:.2f}-{high:.2f})")
    select = measured["listener: select_instances (before)"]
    added = measured["listener: + series_facts (new)"]
    added += measured["listener: + choose_series, 4 series (new)"]
    print(f"  study choice / selection it follows: {added / select:.3f}")
    sr, preview = measured["worker: SR build (before)"], measured["worker: preview render (new)"]
    print(f"  preview / SR build: {preview / sr:.2f}")
    print(f"  preview JPEG: {len(render_preview(key_slices, text)) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
