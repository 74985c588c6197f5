"""Patient-level (multiple-instance) training: bags, their scores, and a run that uses them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.training.bags import BagLoss, BagSampler, bag_logits, bag_order
from model.training.config import TrainConfig, TrainingError
from model.training.data import load_records, write_synthetic_dataset
from model.training.train import LOG_FILE, train
from tests.model.tiny import tiny_config

PATIENTS = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
LABELS = [0, 0, 1, 1]


def _bags(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def test_each_bag_is_one_patient_and_the_labels_alternate() -> None:
    order = bag_order(
        PATIENTS, LABELS, bag_size=4, n_bags=40, generator=torch.Generator().manual_seed(1)
    )
    assert len(order) == 160
    owner = {i: p for p, members in enumerate(PATIENTS) for i in members}
    bags = _bags(order, 4)
    patients = [{owner[i] for i in bag} for bag in bags]
    assert all(len(p) == 1 for p in patients)
    labels = [LABELS[next(iter(p))] for p in patients]
    assert labels == [0, 1] * 20
    # Long enough series give distinct slices; the 2-slice patient is drawn with replacement.
    for bag, p in zip(bags, patients, strict=True):
        if len(PATIENTS[next(iter(p))]) >= 4:
            assert len(set(bag)) == 4
    assert {next(iter(p)) for p in patients} == {0, 1, 2, 3}
    again = bag_order(
        PATIENTS, LABELS, bag_size=4, n_bags=40, generator=torch.Generator().manual_seed(1)
    )
    assert again == order
    with pytest.raises(ValueError, match="bag_size"):
        bag_order(PATIENTS, LABELS, bag_size=0, n_bags=1, generator=torch.Generator())


def test_a_bag_scores_the_mean_of_its_top_k_slice_log_odds() -> None:
    # Two classes: log-odds of the positive (index 1) class is logit1 - logit0.
    logits = torch.tensor([[0.0, -3.0], [0.0, 2.0], [0.0, 1.0], [0.0, -1.0]])
    scores = bag_logits(logits, bag_size=4, k=2, positive_index=1)
    assert scores.shape == (1,)
    assert scores.item() == pytest.approx(1.5)
    assert bag_logits(logits, bag_size=2, k=1, positive_index=1).tolist() == pytest.approx(
        [2.0, 1.0]
    )
    with pytest.raises(ValueError, match="bags of 3"):
        bag_logits(logits, bag_size=3, k=1, positive_index=1)


def test_a_positive_bag_needs_only_a_few_positive_slices() -> None:
    loss = BagLoss(bag_size=4, k=1, positive_index=1)
    one_lesion = torch.tensor([[0.0, -4.0], [0.0, -4.0], [0.0, -4.0], [0.0, 4.0]])
    all_normal = torch.tensor([[0.0, -4.0]] * 4)
    stroke = torch.ones(4, dtype=torch.long)
    normal = torch.zeros(4, dtype=torch.long)
    assert loss(one_lesion, stroke).item() < 0.05
    assert loss(all_normal, stroke).item() > 3.0
    assert loss(all_normal, normal).item() < 0.05
    # A slice-level cross-entropy would punish the three lesion-free slices of the stroke bag.
    assert torch.nn.functional.cross_entropy(one_lesion, stroke).item() > 2.0


def test_training_with_bags_fits_and_records_its_objective(tmp_path: Path) -> None:
    data = write_synthetic_dataset(
        tmp_path / "toy", patients_per_class=4, slices_per_patient=6, size=48
    )
    config = tiny_config(
        data,
        tmp_path / "bags",
        epochs=10,
        batch_size=12,
        lr=5e-3,
        augmentation="none",
        seed=3,
        objective="bag",
        bag_size=4,
        bag_top_k=2,
    )
    train(config, progress=False)
    log = [json.loads(line) for line in (config.output_dir / LOG_FILE).read_text().splitlines()]
    assert len(log) == 10
    assert log[-1]["train_loss"] < 0.8 * log[0]["train_loss"]
    assert all(math.isfinite(line["val_loss"]) for line in log)
    spec = load_checkpoint(config.output_dir).spec
    assert spec.training["config"]["objective"] == "bag"
    assert spec.training["config"]["bag_size"] == 4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"objective": "patient"}, "Unknown objective"),
        ({"objective": "bag", "bag_size": 4, "bag_top_k": 5}, "bag_top_k <= bag_size"),
        ({"objective": "bag", "bag_size": 64}, "bag_size <= batch_size"),
        ({"objective": "bag", "teacher_architecture": "resnet10t"}, "slice objective"),
    ],
)
def test_bad_bag_settings_are_refused(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    config = TrainConfig(data_dir=tmp_path, output_dir=tmp_path / "out", batch_size=32)
    for key, value in changes.items():
        setattr(config, key, value)
    with pytest.raises(TrainingError, match=message):
        train(config, progress=False)


def test_validation_loss_scores_each_patients_whole_series_as_one_bag(tmp_path: Path) -> None:
    data = write_synthetic_dataset(
        tmp_path / "toy", patients_per_class=2, slices_per_patient=6, size=32
    )
    records = load_records(data)
    sampler = BagSampler.build(
        records, positive_class="stroke", positive_index=1, bag_size=4, bag_top_k=2, batch_size=10
    )
    assert sampler.batch_size == 8
    assert sorted(sampler.labels) == [0, 0, 1, 1]
    stroke = np.array([r.label == "stroke" for r in records])
    # One lesion slice per stroke patient is enough for a low loss with k=1 ...
    focal = np.where(stroke, 0.01, 0.01)
    for patient in {r.patient for r in records if r.label == "stroke"}:
        first = next(i for i, r in enumerate(records) if r.patient == patient)
        focal[first] = 0.99
    assert sampler.patient_loss(records, focal, k=1) < 0.05
    # ... and a confidently wrong verdict on every patient costs a lot.
    wrong = np.where(stroke, 0.01, 0.99)
    assert sampler.patient_loss(records, wrong, k=1) > 4.0
