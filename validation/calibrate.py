"""`stroke-triage calibrate`: choose the threshold on a site's own labelled series.

The series are scored exactly as ``validate`` (and so the worker) scores them. A NEW checkpoint
folder is written: the same weights, a spec with the new threshold, what it achieved (with
bootstrap intervals), the data fingerprint, the date and the probability distribution that
``performance`` later measures drift against. The source checkpoint is never changed.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from model.checkpoint import SPEC_FILE, load_checkpoint
from model.evaluation.drift import probability_distribution
from model.evaluation.metrics import threshold_for_sensitivity
from model.evaluation.series_metrics import series_metric_intervals, series_metrics
from model.spec import ModelSpec, SiteCalibration
from validation.labels_file import SiteValidationError
from validation.validate import (
    load_classifier,
    read_inputs,
    score_folder,
)
from worker.config import WorkerConfig
from worker.context import checkpoint_dir

log = logging.getLogger(__name__)

MIN_POSITIVES = 10
"""Fewest stroke series for a threshold chosen for a sensitivity to mean anything."""
DEFAULT_MAX_INTERVAL_WIDTH = 0.3
"""Widest 95 % interval of the achieved sensitivity that is accepted."""


class CalibrationRefusedError(SiteValidationError):
    """Too few positive series (or too wide an interval) to set a threshold."""


@dataclass(frozen=True)
class CalibrationResult:
    """The new checkpoint and what its threshold achieved."""

    output: Path
    calibration: SiteCalibration
    version: str


def more_positives_needed(positives: int, width: float, bound: float) -> int:
    """Positives to add so that an interval of ``width`` narrows to ``bound`` (width ~ 1/sqrt n)."""
    if width <= bound or positives == 0:
        return max(0, MIN_POSITIVES - positives)
    return max(1, math.ceil(positives * (width / bound) ** 2) - positives)


def calibrate(
    *,
    series_dir: Path,
    labels_csv: Path,
    output: Path,
    target_sensitivity: float,
    config: WorkerConfig,
    min_slices: int,
    checkpoint: Path | None = None,
    max_interval_width: float = DEFAULT_MAX_INTERVAL_WIDTH,
    n_resamples: int = 1000,
    progress: bool = True,
    now: datetime | None = None,
    version: str | None = None,
) -> CalibrationResult:
    """Score the site's series, pick the threshold for the target, write a new checkpoint.

    The new spec gets its own version label (default :func:`calibrated_version`), so that
    ``performance`` tells the calibrated copy (same weights, same sha256) from its source.

    Raises:
        SiteValidationError: Bad input, or ``output`` is the source or a non-empty folder.
        CalibrationRefusedError: Fewer than :data:`MIN_POSITIVES` positive series, no normal
            series, or the sensitivity interval is wider than ``max_interval_width``; says
            how many more.
    """
    if not 0.0 < target_sensitivity <= 1.0:
        raise SiteValidationError(
            f"The target sensitivity must lie in (0, 1], got {target_sensitivity}."
        )
    if version is not None and not version.strip():
        raise SiteValidationError("The version label of the calibrated checkpoint is empty.")
    source = checkpoint if checkpoint is not None else checkpoint_dir(config)
    if output.exists() and (output.resolve() == source.resolve() or any(output.iterdir())):
        raise SiteValidationError(
            f"The output {output} exists and is not empty; calibrate writes a new checkpoint "
            "folder and never changes an existing one."
        )
    inputs = read_inputs(series_dir=series_dir, labels_csv=labels_csv)
    classifier = load_classifier(config, source)
    source_version = classifier.spec.version
    calibrated_at = now or datetime.now(UTC)
    new_version = (
        version if version is not None else calibrated_version(source_version, calibrated_at)
    )
    if new_version == source_version:
        raise SiteValidationError(
            f"The calibrated checkpoint needs a version label other than its source's "
            f"({source_version!r}): the two share their weights and would be reported as one."
        )
    scored = score_folder(classifier, inputs, min_slices=min_slices, progress=progress)
    labels, scores, _ = scored.scored()
    positives = int(labels.sum())
    negatives = int(labels.size - positives)
    if positives < MIN_POSITIVES:
        raise CalibrationRefusedError(
            f"Only {positives} positive (stroke) series could be scored; at least "
            f"{MIN_POSITIVES} are needed to choose a threshold for a sensitivity: add "
            f"{MIN_POSITIVES - positives} more."
        )
    if negatives == 0:
        # The specificity (and its interval) would be undefined, and the spec cannot hold NaN.
        raise CalibrationRefusedError(
            "There are no normal series among the scored ones: the specificity of a threshold "
            "cannot be measured without them; add labelled normal series."
        )
    threshold = threshold_for_sensitivity(labels, scores, target_sensitivity)
    achieved = series_metrics(labels, scores, threshold)
    intervals = series_metric_intervals(labels, scores, threshold, n_resamples=n_resamples)
    low, high = intervals["sensitivity"]
    width = high - low
    if width > max_interval_width:
        raise CalibrationRefusedError(
            f"The 95 % interval of the achieved sensitivity ({low:.3f} - {high:.3f}, width "
            f"{width:.3f}) is wider than {max_interval_width}; about "
            f"{more_positives_needed(positives, width, max_interval_width)} more positive "
            f"series are needed (have {positives})."
        )
    spec = classifier.spec
    calibration = SiteCalibration(
        target_sensitivity=target_sensitivity,
        threshold=threshold,
        previous_threshold=spec.threshold,
        sensitivity=achieved["sensitivity"],
        sensitivity_ci=intervals["sensitivity"],
        specificity=achieved["specificity"],
        specificity_ci=intervals["specificity"],
        positives=positives,
        negatives=negatives,
        data_fingerprint=scored.fingerprint(),
        calibrated_at=calibrated_at.isoformat(timespec="seconds"),
        source_sha256=classifier.sha256,
    )
    new_spec = spec.model_copy(
        update={
            "version": new_version,
            "threshold": threshold,
            "threshold_calibrated": True,
            "calibration": calibration,
            "reference_distribution": probability_distribution(
                scores, source=f"calibrate {calibration.data_fingerprint[:12]}"
            ),
        }
    )
    write_calibrated(source, output, ModelSpec.model_validate(new_spec.model_dump()))
    log.info(
        "Calibrated %s as version %s: threshold %.4f (was %.4f), sensitivity %.3f, "
        "specificity %.3f",
        output,
        new_version,
        threshold,
        spec.threshold,
        calibration.sensitivity,
        calibration.specificity,
    )
    return CalibrationResult(output, calibration, new_version)


def calibrated_version(source_version: str, calibrated_at: datetime) -> str:
    """The default version label of a calibrated copy, e.g. ``1.2.0+cal20260131``."""
    return f"{source_version}+cal{calibrated_at.astimezone(UTC):%Y%m%d}"


def write_calibrated(source: Path, output: Path, spec: ModelSpec) -> None:
    """Copy every file of ``source`` but the spec into ``output``; write the new spec last."""
    output.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.name != SPEC_FILE:
            shutil.copy2(path, output / path.name)
    (output / SPEC_FILE).write_text(spec.to_json() + "\n")
    load_checkpoint(output)  # the new folder must load, or this is a bug


def run_calibrate(
    config: WorkerConfig,
    *,
    min_slices: int,
    checkpoint: Path | None,
    series_dir: Path,
    labels_csv: Path,
    output: Path,
    target_sensitivity: float,
    max_interval_width: float,
    progress: bool,
    version: str | None = None,
) -> int:
    """`stroke-triage calibrate`: write the new checkpoint and print what it achieved."""
    result = calibrate(
        series_dir=series_dir,
        labels_csv=labels_csv,
        output=output,
        target_sensitivity=target_sensitivity,
        config=config,
        min_slices=min_slices,
        checkpoint=checkpoint,
        max_interval_width=max_interval_width,
        progress=progress,
        version=version,
    )
    c = result.calibration
    print(
        f"Threshold {c.threshold:.4f} (was {c.previous_threshold:.4f}) on {c.positives} stroke "
        f"and {c.negatives} normal series: sensitivity {c.sensitivity:.3f} "
        f"({c.sensitivity_ci[0]:.3f}-{c.sensitivity_ci[1]:.3f}), specificity "
        f"{c.specificity:.3f} ({c.specificity_ci[0]:.3f}-{c.specificity_ci[1]:.3f})."
    )
    print(
        f"New checkpoint: {result.output}, version {result.version} "
        "(point STROKE_TRIAGE_WORKER__CHECKPOINT at it)"
    )
    return 0
