"""The end of a run: the decision rule chosen on the validation patients, and the checkpoint."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

from model.checkpoint import save_checkpoint
from model.device import bf16_agrees
from model.evaluation.metrics import binary_metrics, threshold_for_sensitivity
from model.spec import AggregationSpec, ModelSpec
from model.training.config import TrainConfig, recorded_command
from model.training.data import SliceDataset, SliceRecord
from model.training.scoring import choose_decision_rule, predict, series_scores
from model.training.state import RunState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provenance:
    """What the spec records about how the network was trained, besides the config."""

    train_records: Sequence[SliceRecord]
    data_fingerprint: str
    device: torch.device
    precision: str
    teacher: dict[str, Any] | None = None
    pretraining: dict[str, Any] | None = None
    init: dict[str, Any] | None = None
    """The initial weights' file name, sha256 and whether the head was re-initialised."""


def finalize(
    config: TrainConfig,
    *,
    spec: ModelSpec,
    network: nn.Module,
    validation: Sequence[SliceRecord],
    val_set: SliceDataset,
    state: RunState,
    provenance: Provenance,
) -> Path:
    """Chooses the decision rule on the validation patients and saves the checkpoint.

    Returns:
        The checkpoint directory (``config.output_dir``).
    """
    device = provenance.device
    positive = spec.positive_class
    outputs = {}
    for mode in ("fp32", "bf16"):
        outputs[mode], _ = predict(
            network,
            val_set,
            device=device,
            precision=mode,
            batch_size=config.batch_size,
            positive_index=spec.positive_index,
        )
    probabilities = outputs["fp32"]
    rule, threshold, aucs = choose_decision_rule(
        validation,
        probabilities,
        positive_label=positive,
        k=config.top_k,
        target_sensitivity=config.target_sensitivity,
    )
    if config.aggregation is not None and config.aggregation != rule:  # --aggregation decides
        rule = config.aggregation
        _, labels, scores = series_scores(
            validation, probabilities, rule=rule, k=config.top_k, positive_label=positive
        )
        threshold = threshold_for_sensitivity(labels, scores, config.target_sensitivity)
    names, series_labels, series = series_scores(
        validation, probabilities, rule=rule, k=config.top_k, positive_label=positive
    )
    _, _, series_bf16 = series_scores(
        validation, outputs["bf16"], rule=rule, k=config.top_k, positive_label=positive
    )
    slice_labels = np.array([int(r.label == positive) for r in validation])
    metrics: dict[str, Any] = {
        "validation_patients": len(names),
        "validation_slices": len(validation),
        "validation_series": binary_metrics(series_labels, series, threshold),
        "validation_slice": binary_metrics(slice_labels, probabilities, threshold),
        "validation_series_auc_by_rule": aucs,
        "bf16_agrees_with_fp32": bf16_agrees(series, series_bf16, threshold),
        "bf16_max_abs_difference": float(np.max(np.abs(outputs["fp32"] - outputs["bf16"]))),
    }
    created = datetime.now(UTC)
    final = spec.model_copy(
        update={
            "aggregation": AggregationSpec(rule=rule, k=config.top_k),
            "threshold": float(min(1.0, max(0.0, threshold))),
            "trained": True,
            "data_fingerprint": provenance.data_fingerprint,
            "metrics": metrics,
            "training": _training_record(config, state, provenance),
            "created_at": created.isoformat(timespec="seconds"),
            "version": config.version or created.strftime("%Y%m%dT%H%M%SZ"),
        }
    )
    final = ModelSpec.model_validate(final.model_dump())
    network.to("cpu")
    directory = save_checkpoint(Path(config.output_dir), network, final)
    logger.info(
        "Checkpoint written to %s: rule %s, threshold %.4f, validation series AUC %.3f",
        directory,
        rule,
        threshold,
        aucs[rule],
    )
    return directory


def _training_record(
    config: TrainConfig, state: RunState, provenance: Provenance
) -> dict[str, Any]:
    """The spec's ``training`` entry: no absolute path of the training machine."""
    train_records = provenance.train_records
    training: dict[str, Any] = {
        "command": recorded_command(sys.argv, config.data_dir),
        "seed": config.seed,
        "config": config.as_json_dict(),
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "stopped_early": state.stopped_early,
        "train_patients": len({r.patient for r in train_records}),
        "train_slices": len(train_records),
        "device": str(provenance.device),
        "precision": provenance.precision,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
    }
    if provenance.teacher is not None:
        training["teacher"] = provenance.teacher
    if provenance.pretraining is not None:
        training["pretraining"] = provenance.pretraining
    if provenance.init is not None:
        training["init"] = provenance.init
    return training
