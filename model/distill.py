"""DeiT-style distillation from a CNN teacher into the ViT.

The teacher (a timm CNN such as ``resnet18``) is trained first, on the student's own training
slices with the same inputs and optimiser settings; it only guides training and is never
saved as the product. The student then learns from the labels and from the teacher's output on
the same (augmented) batch: ``hard`` uses the teacher's decision as a second label (DeiT's hard
distillation), ``soft`` the teacher's tempered probabilities (KL divergence).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from enum import StrEnum
from typing import Any

import timm
import torch
from torch import nn

from model.errors import ModelError
from model.schedule import warmup_cosine

logger = logging.getLogger(__name__)


class DistillationError(ModelError):
    """Distillation is configured in a way that cannot work."""


class DistillationMode(StrEnum):
    """How the teacher's output enters the student's loss."""

    HARD = "hard"
    """The teacher's argmax is a second target (cross-entropy), as in DeiT."""
    SOFT = "soft"
    """KL divergence to the teacher's probabilities at a temperature."""


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


def _autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def train_teacher(
    teacher: nn.Module,
    batches: Iterable[Iterable[tuple[torch.Tensor, torch.Tensor]]],
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
        batches: One iterable of (images, targets) batches per epoch.
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
    epochs = list(batches)
    total_steps = max(1, len(epochs) * steps_per_epoch)
    warmup_steps = warmup_epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=lr, weight_decay=weight_decay)

    scheduler = warmup_cosine(optimizer, warmup_steps=warmup_steps, total_steps=total_steps)
    teacher.to(device).train()
    losses: list[float] = []
    for epoch, epoch_batches in enumerate(epochs, start=1):
        started = time.perf_counter()
        total, seen = 0.0, 0
        for images, targets in epoch_batches:
            with _autocast(device, precision):
                logits = teacher(images.to(device))
            loss = loss_fn(logits.float(), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.item()) * len(targets)
            seen += len(targets)
        losses.append(total / max(1, seen))
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
