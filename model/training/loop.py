"""The one optimisation loop that the classifier, its CNN teacher and MAE pretraining share.

A caller says how one batch becomes a loss (:data:`StepLoss`); the loop moves batches to the
device, steps the optimiser and the per-step schedule, and returns the epoch's mean loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from model.training.schedule import warmup_cosine

Batch = tuple[torch.Tensor, torch.Tensor]
"""Images and their targets."""

StepLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""The loss of one batch, given its images and targets already on the device."""


def batches(
    dataset: Dataset[tuple[torch.Tensor, int]],
    order: Sequence[int],
    batch_size: int,
    num_workers: int = 0,
) -> Iterator[Batch]:
    """The items of ``dataset`` in ``order``, batched."""
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=list(order), num_workers=num_workers
    )
    yield from loader


def optimiser(
    parameters: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
    *,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with linear warm-up and cosine decay (stepped once per batch).

    ``parameters`` may be parameter groups; a group's own ``lr`` is its peak learning rate.
    """
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    scheduler = warmup_cosine(optimizer, warmup_steps=warmup_steps, total_steps=total_steps)
    return optimizer, scheduler


def train_epoch(
    model: nn.Module,
    epoch_batches: Iterable[Batch],
    *,
    step_loss: StepLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    progress: str | None = None,
    total: int | None = None,
) -> float:
    """One pass over ``epoch_batches`` in training mode.

    Args:
        model: Put in training mode; ``step_loss`` runs it.
        epoch_batches: The epoch's batches.
        step_loss: The loss of one batch (autocast is its business: ``model.device.autocast``).
        optimizer: Stepped after every batch.
        scheduler: Stepped after every optimiser step.
        device: Where batches go.
        progress: A progress bar with this description; None shows none.
        total: Batches in the epoch, for the progress bar.

    Returns:
        The mean loss per item.
    """
    model.train()
    total_loss, seen = 0.0, 0
    bar = tqdm(epoch_batches, total=total, desc=progress, disable=progress is None, leave=False)
    for batch_images, batch_targets in bar:
        images, targets = batch_images.to(device), batch_targets.to(device)
        loss = step_loss(images, targets)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        scheduler.step()
        total_loss += float(loss.item()) * len(images)
        seen += len(images)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}")
    return total_loss / max(1, seen)
