"""Validation during training: slice predictions, series scores and the decision rule."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from model.aggregate import AGGREGATION_RULES, aggregate
from model.device import autocast
from model.evaluation.metrics import roc_auc, threshold_for_sensitivity
from model.training.config import TrainingError
from model.training.data import SliceDataset, SliceRecord, group_by_patient
from model.training.loop import batches


def predict(
    network: nn.Module,
    dataset: SliceDataset,
    *,
    device: torch.device,
    precision: str,
    batch_size: int,
    positive_index: int,
    loss_fn: nn.Module | None = None,
) -> tuple[npt.NDArray[np.float64], float]:
    """Positive-class probability of every item of ``dataset`` (in order) and the mean loss."""
    network.eval()
    probabilities: list[npt.NDArray[np.float64]] = []
    total_loss = 0.0
    with torch.inference_mode():
        for images, labels in batches(dataset, range(len(dataset)), batch_size):
            with autocast(device, precision):
                logits = network(images.to(device))
            logits = logits.float()
            if loss_fn is not None:
                total_loss += float(loss_fn(logits, labels.to(device)).item()) * len(labels)
            probs = torch.softmax(logits, dim=-1)[:, positive_index]
            probabilities.append(probs.cpu().double().numpy())
    return np.concatenate(probabilities), total_loss / max(1, len(dataset))


def series_scores(
    records: Sequence[SliceRecord],
    probabilities: npt.NDArray[np.float64],
    *,
    rule: str,
    k: int,
    positive_label: str,
) -> tuple[list[str], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Aggregates slice probabilities per patient.

    Returns:
        Patient ids, their 0/1 labels and their series probabilities.
    """
    patients = group_by_patient(records)
    names = sorted(patients)
    labels = np.array([int(records[patients[p][0]].label == positive_label) for p in names])
    scores = np.array([aggregate(probabilities[patients[p]], rule=rule, k=k) for p in names])
    return names, labels, scores


def validation_aucs(
    records: Sequence[SliceRecord],
    probabilities: npt.NDArray[np.float64],
    *,
    k: int,
    positive_label: str,
) -> tuple[float, float]:
    """Slice-level and series-level (top-k mean) AUC of validation predictions."""
    slice_labels = np.array([int(r.training_label() == positive_label) for r in records])
    _, series_labels, series = series_scores(
        records, probabilities, rule="top_k_mean", k=k, positive_label=positive_label
    )
    return roc_auc(slice_labels, probabilities), roc_auc(series_labels, series)


def choose_decision_rule(
    records: Sequence[SliceRecord],
    probabilities: npt.NDArray[np.float64],
    *,
    positive_label: str,
    k: int,
    target_sensitivity: float,
) -> tuple[str, float, dict[str, float]]:
    """Picks the aggregation rule with the best series AUC, then its threshold.

    Ties keep the order of :data:`AGGREGATION_RULES` (top-k mean first).

    Returns:
        The rule, the threshold reaching ``target_sensitivity`` on these patients, and each
        rule's series AUC.
    """
    aucs: dict[str, float] = {}
    for rule in AGGREGATION_RULES:
        _, labels, scores = series_scores(
            records, probabilities, rule=rule, k=k, positive_label=positive_label
        )
        aucs[rule] = roc_auc(labels, scores)
    finite = {rule: auc for rule, auc in aucs.items() if not math.isnan(auc)}
    best = max(finite, key=lambda rule: finite[rule]) if finite else AGGREGATION_RULES[0]
    _, labels, scores = series_scores(
        records, probabilities, rule=best, k=k, positive_label=positive_label
    )
    if not labels.any():
        raise TrainingError("The validation patients include no positive case to set a threshold.")
    threshold = threshold_for_sensitivity(labels, scores, target_sensitivity)
    return best, threshold, aucs
