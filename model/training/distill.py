"""DeiT-style distillation from a CNN teacher into the ViT.

The teacher (a timm CNN such as ``resnet18``) is trained first, on the student's own training
slices with the same inputs and optimiser settings; it only guides training and is never
saved as the product. The student then learns from the labels and from the teacher's output on
the same (augmented) batch: ``hard`` uses the teacher's decision as a second label (DeiT's hard
distillation), ``soft`` the teacher's tempered probabilities (KL divergence).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from model.device import autocast
from model.errors import ModelError
from model.training.config import DistillationMode, TrainConfig
from model.training.data import SliceDataset, SliceRecord
from model.training.loop import Batch, StepLoss, batches, optimiser, train_epoch
from model.training.scoring import predict, validation_aucs
from model.training.state import atomic_torch_save, load_own

logger = logging.getLogger(__name__)

TEACHER_FILE = "teacher.pt"


class DistillationError(ModelError):
    """Distillation is configured in a way that cannot work."""


def build_teacher(architecture: str, *, num_classes: int) -> nn.Module:
    """An untrained timm CNN teacher; never downloads weights.

    Raises:
        DistillationError: If timm does not know the architecture.
    """
    try:
        network: nn.Module = timm.create_model(
            architecture, pretrained=False, num_classes=num_classes, in_chans=3
        )
    except RuntimeError as error:
        raise DistillationError(
            f"timm cannot build the teacher {architecture!r}: {error}"
        ) from error
    return network


def train_teacher(
    teacher: nn.Module,
    epochs: Iterable[Iterable[Batch]],
    *,
    steps_per_epoch: int,
    lr: float,
    weight_decay: float,
    warmup_epochs: int,
    loss_fn: nn.Module,
    device: torch.device,
    precision: str,
) -> list[float]:
    """Trains the teacher in place with AdamW, linear warm-up and cosine decay.

    Args:
        teacher: The network to train.
        epochs: One iterable of (images, targets) batches per epoch.
        steps_per_epoch: Batches per epoch (for the schedule).
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_epochs: Epochs of linear warm-up.
        loss_fn: The student's classification loss (same class weights).
        device: Where to train.
        precision: ``bf16`` for autocast, else fp32.

    Returns:
        The mean training loss of every epoch.
    """
    epoch_list = list(epochs)
    optimizer, scheduler = optimiser(
        teacher.parameters(),
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_epochs * steps_per_epoch,
        total_steps=max(1, len(epoch_list) * steps_per_epoch),
    )
    teacher.to(device)

    def step_loss(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            logits = teacher(images)
        loss: torch.Tensor = loss_fn(logits.float(), targets)
        return loss

    losses: list[float] = []
    for epoch, epoch_batches in enumerate(epoch_list, start=1):
        started = time.perf_counter()
        losses.append(
            train_epoch(
                teacher,
                epoch_batches,
                step_loss=step_loss,
                optimizer=optimizer,
                scheduler=scheduler,
                device=device,
            )
        )
        logger.info(
            "Teacher epoch %s: train loss %.4f (%.1f s)",
            epoch,
            losses[-1],
            time.perf_counter() - started,
        )
    teacher.eval()
    return losses


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    base_loss: nn.Module,
    mode: DistillationMode | str,
    weight: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``(1 - weight) * label loss + weight * teacher loss``.

    Args:
        student_logits: Student output, ``(N, C)``.
        teacher_logits: Teacher output for the same inputs, ``(N, C)``.
        targets: Class indices, ``(N,)``.
        base_loss: The label loss (also used against the teacher's decision in ``hard`` mode).
        mode: ``hard`` or ``soft``.
        weight: Share of the teacher term, in [0, 1].
        temperature: Softening of both distributions in ``soft`` mode.

    Raises:
        DistillationError: If the weight or temperature is out of range.
    """
    if not 0.0 <= weight <= 1.0:
        raise DistillationError(f"The distillation weight must lie in [0, 1], got {weight}.")
    if temperature <= 0:
        raise DistillationError(f"The temperature must be positive, got {temperature}.")
    label_term = base_loss(student_logits, targets)
    teacher_logits = teacher_logits.detach().float()
    if DistillationMode(mode) is DistillationMode.HARD:
        teacher_term = base_loss(student_logits, teacher_logits.argmax(dim=-1))
    else:
        teacher_term = nn.functional.kl_div(
            nn.functional.log_softmax(student_logits / temperature, dim=-1),
            nn.functional.log_softmax(teacher_logits / temperature, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (temperature * temperature)
    result: torch.Tensor = (1.0 - weight) * label_term + weight * teacher_term
    return result


def distilled_step_loss(
    network: nn.Module,
    teacher: nn.Module,
    config: TrainConfig,
    *,
    loss_fn: nn.Module,
    device: torch.device,
    precision: str,
) -> StepLoss:
    """The student's loss of one batch: its labels and the teacher's output on that batch."""

    def step_loss(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            logits = network(images)
        with torch.no_grad(), autocast(device, precision):
            teacher_logits = teacher(images)
        return distillation_loss(
            logits.float(),
            teacher_logits,
            targets,
            base_loss=loss_fn,
            mode=config.distillation,
            weight=config.distill_weight,
            temperature=config.distill_temperature,
        )

    return step_loss


def prepare_teacher(
    config: TrainConfig,
    *,
    output_dir: Path,
    train_set: SliceDataset,
    val_set: SliceDataset,
    validation: Sequence[SliceRecord],
    loss_fn: nn.Module,
    device: torch.device,
    precision: str,
    num_classes: int,
    positive_index: int,
    positive: str,
) -> tuple[nn.Module | None, dict[str, Any] | None]:
    """Builds the CNN teacher: loaded from ``teacher.pt`` when a run resumes, else trained.

    Returns:
        The teacher in eval mode and its summary for the spec, or (None, None) without one.
    """
    if config.teacher_architecture is None:
        return None, None
    DistillationMode(config.distillation)
    teacher = build_teacher(config.teacher_architecture, num_classes=num_classes).to(device)
    path = output_dir / TEACHER_FILE
    epochs = config.teacher_epochs or config.epochs
    if path.is_file():
        saved = load_own(path)
        teacher.load_state_dict(saved["model"])
        losses = list(saved["losses"])
        teacher.eval()
        logger.info("Loaded the teacher from %s", path)
    else:

        def epoch_batches(epoch: int) -> Iterator[Batch]:
            train_set.set_epoch(epoch)
            generator = torch.Generator().manual_seed(config.seed * 100_003 + 7_919 * epoch)
            order = torch.randperm(len(train_set), generator=generator).tolist()
            yield from batches(train_set, order, config.batch_size, config.num_workers)

        losses = train_teacher(
            teacher,
            (epoch_batches(epoch) for epoch in range(1, epochs + 1)),
            steps_per_epoch=math.ceil(len(train_set) / config.batch_size),
            lr=config.lr,
            weight_decay=config.weight_decay,
            warmup_epochs=config.warmup_epochs,
            loss_fn=loss_fn,
            device=device,
            precision=precision,
        )
        atomic_torch_save({"model": teacher.state_dict(), "losses": losses}, path)
    probabilities, val_loss = predict(
        teacher,
        val_set,
        device=device,
        precision=precision,
        batch_size=config.batch_size,
        positive_index=positive_index,
        loss_fn=loss_fn,
    )
    slice_auc, series_auc = validation_aucs(
        validation, probabilities, k=config.top_k, positive_label=positive
    )
    summary = {
        "architecture": config.teacher_architecture,
        "epochs": epochs,
        "final_train_loss": losses[-1] if losses else None,
        "val_loss": val_loss,
        "val_slice_auc": slice_auc,
        "val_series_auc": series_auc,
    }
    logger.info(
        "Teacher %s: train loss %.4f, val series AUC %.3f",
        config.teacher_architecture,
        summary["final_train_loss"] or float("nan"),
        summary["val_series_auc"],
    )
    return teacher, summary
