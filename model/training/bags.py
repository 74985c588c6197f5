"""Patient-level training: each step sees bags of slices, and only the bag carries a label.

The Kaggle labels belong to patients. Trained slice by slice, the network is told that every
slice of a stroke patient shows a stroke, skull base included, which it can only satisfy by
remembering patients. Here a bag is a random subset of one patient's slices and its score is
the mean of its ``k`` highest slice log-odds, the same shape of rule as the series aggregation
at inference (top-k mean), so a bag is positive when a few of its slices are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from model.training.data import SliceRecord, group_by_patient


def bag_order(
    patients: Sequence[Sequence[int]],
    labels: Sequence[int],
    *,
    bag_size: int,
    n_bags: int,
    generator: torch.Generator,
) -> list[int]:
    """Dataset indices for ``n_bags`` bags, bag after bag, ``bag_size`` indices each.

    Patients are drawn so that both labels are equally frequent (class balance at the level
    of patients); slices are drawn without replacement, or with it for short series.

    Args:
        patients: Each patient's dataset indices.
        labels: Each patient's 0/1 label.
        bag_size: Slices per bag.
        n_bags: Bags to draw.
        generator: The source of randomness.

    Returns:
        ``n_bags * bag_size`` indices.
    """
    if bag_size < 1 or n_bags < 1:
        raise ValueError(f"Need bag_size >= 1 and n_bags >= 1, got {bag_size} and {n_bags}.")
    by_label: dict[int, list[int]] = {}
    for patient, label in enumerate(labels):
        by_label.setdefault(int(label), []).append(patient)
    classes = sorted(by_label)
    order: list[int] = []
    for bag in range(n_bags):
        group = by_label[classes[bag % len(classes)]]
        members = patients[group[int(torch.randint(len(group), (1,), generator=generator))]]
        if len(members) >= bag_size:
            picks = torch.randperm(len(members), generator=generator)[:bag_size]
        else:
            picks = torch.randint(len(members), (bag_size,), generator=generator)
        order.extend(members[int(i)] for i in picks)
    return order


def bag_logits(logits: torch.Tensor, *, bag_size: int, k: int, positive_index: int) -> torch.Tensor:
    """Each bag's score: the mean of its ``k`` highest slice log-odds.

    Args:
        logits: ``(n_bags * bag_size, n_classes)`` network outputs, bag after bag.
        bag_size: Slices per bag.
        k: Slices that make up a bag's score (at most ``bag_size``).
        positive_index: The positive class's column.

    Returns:
        ``(n_bags,)`` bag log-odds.
    """
    if logits.shape[0] % bag_size:
        raise ValueError(f"{logits.shape[0]} outputs do not split into bags of {bag_size}.")
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    positive = log_probs[:, positive_index]
    negative = torch.logsumexp(
        torch.cat([log_probs[:, :positive_index], log_probs[:, positive_index + 1 :]], dim=1),
        dim=1,
    )
    log_odds = (positive - negative).view(-1, bag_size)
    return log_odds.topk(min(k, bag_size), dim=1).values.mean(dim=1)


class BagLoss(nn.Module):
    """Binary cross-entropy between bag scores and the patients' labels."""

    def __init__(self, *, bag_size: int, k: int, positive_index: int) -> None:
        super().__init__()
        self.bag_size = bag_size
        self.k = k
        self.positive_index = positive_index

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``targets`` are per slice (every slice of a bag has its patient's label)."""
        scores = bag_logits(
            logits, bag_size=self.bag_size, k=self.k, positive_index=self.positive_index
        )
        bag_targets = (targets.view(-1, self.bag_size)[:, 0] == self.positive_index).float()
        return nn.functional.binary_cross_entropy_with_logits(scores, bag_targets)


@dataclass
class BagSampler:
    """The training slices as patients' bags, with the loss that scores them."""

    patients: list[list[int]]
    labels: list[int]
    bag_size: int
    batch_size: int
    """Slices per step: whole bags, at most the configured batch size."""
    loss: BagLoss
    positive: str

    @classmethod
    def build(
        cls,
        records: Sequence[SliceRecord],
        *,
        positive_class: str,
        positive_index: int,
        bag_size: int,
        bag_top_k: int,
        batch_size: int,
    ) -> BagSampler:
        """Bags over ``records``, grouped by patient."""
        groups = list(group_by_patient(records).values())
        return cls(
            patients=groups,
            labels=[int(records[g[0]].label == positive_class) for g in groups],
            bag_size=bag_size,
            batch_size=batch_size // bag_size * bag_size,
            loss=BagLoss(bag_size=bag_size, k=bag_top_k, positive_index=positive_index),
            positive=positive_class,
        )

    def order(self, steps: int, generator: torch.Generator) -> list[int]:
        """Indices of one epoch: ``steps`` batches of whole bags."""
        n_bags = steps * (self.batch_size // self.bag_size)
        return bag_order(
            self.patients, self.labels, bag_size=self.bag_size, n_bags=n_bags, generator=generator
        )

    def patient_loss(
        self, records: Sequence[SliceRecord], probabilities: npt.NDArray[np.float64], *, k: int
    ) -> float:
        """Validation loss of the same kind: each patient's whole series is one bag."""
        clipped = np.clip(probabilities, 1e-6, 1 - 1e-6)
        log_odds = np.log(clipped / (1 - clipped))
        patients = group_by_patient(records)
        names = sorted(patients)
        labels = np.array([int(records[patients[p][0]].label == self.positive) for p in names])
        scores = np.array([np.sort(log_odds[patients[p]])[-k:].mean() for p in names])
        losses = np.logaddexp(0.0, -scores) * labels + np.logaddexp(0.0, scores) * (1 - labels)
        return float(losses.mean())
