"""The learning-rate schedule every training loop here uses: linear warm-up, then cosine."""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """The factor on the peak learning rate at ``step``: linear warm-up, cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler, stepped once per optimizer step, that follows :func:`warmup_cosine_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine_factor(step, warmup_steps=warmup_steps, total_steps=total_steps),
    )
