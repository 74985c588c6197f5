"""Training: a seeded, resumable run that ends in a checkpoint with its decision rule.

The run writes into one output folder: ``last.pt`` (full training state, rewritten every epoch),
``train_log.jsonl`` (one line per epoch) and finally the checkpoint itself
(``model.safetensors`` + ``spec.json``). Rerunning with the same folder resumes from ``last.pt``.

:func:`train` is a few named steps: set the run up, resume it, prepare the teacher and the
pretrained encoder, run the epochs (``model.training.loop``), then finalize the checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.architectures import HYBRID_LITE0
from model.device import autocast, resolve_precision, select_device
from model.network import build_network
from model.spec import ModelSpec
from model.training.backbone import hybrid_backbone, load_imagenet_backbone
from model.training.bags import BagSampler
from model.training.config import (
    Augmentation,
    TrainConfig,
    TrainingError,
    build_spec,
    check_config,
)
from model.training.data import (
    DataError,
    SliceDataset,
    SliceRecord,
    fingerprint,
    label_index,
    limit_records,
    load_records,
    patient_holdout,
)
from model.training.distill import distilled_step_loss, prepare_teacher
from model.training.finalize import Provenance, finalize
from model.training.finetune import (
    freeze_blocks,
    initial_network,
    parameter_groups,
    trainable_parameters,
)
from model.training.hybrid import train_hybrid
from model.training.loop import StepLoss, batches, optimiser, train_epoch
from model.training.pretrain import PRETRAINED_FILE, prepare_pretraining
from model.training.scoring import predict, validation_aucs
from model.training.slice_labels import with_slice_labels
from model.training.state import (
    STATE_FILE,
    RunState,
    atomic_torch_save,
    config_differences,
    load_own,
    rng_state,
    seed_everything,
    set_rng_state,
)

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"

EpochCallback = Callable[[int, dict[str, Any]], None]


@dataclass
class _Run:
    """Everything the epochs of one run share."""

    config: TrainConfig
    config_dict: dict[str, Any]
    spec: ModelSpec
    train_records: list[SliceRecord]
    validation: list[SliceRecord]
    data_fingerprint: str
    device: torch.device
    precision: str
    network: nn.Module
    train_set: SliceDataset
    val_set: SliceDataset
    loss_fn: nn.Module
    bags: BagSampler | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    init: dict[str, Any] | None = None
    """The initial weights (``config.init``): file name, sha256, whether the head is new."""

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)


def train(
    config: TrainConfig,
    *,
    records: Sequence[SliceRecord] | None = None,
    val_records: Sequence[SliceRecord] | None = None,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> Path:
    """Trains a network and writes its checkpoint into ``config.output_dir``.

    Args:
        config: The run's configuration.
        records: Slices to train on (default: the manifest of ``config.data_dir``).
        val_records: Validation slices; by default ``config.val_fraction`` of the patients of
            ``records`` are held out (grouped by patient, stratified by label).
        progress: Show a tqdm progress bar.
        on_epoch_end: Called with (epoch, log line) after each epoch's state is saved.

    Returns:
        The checkpoint directory (``config.output_dir``).

    Raises:
        TrainingError: If the config is invalid or the output folder holds a different run.
        DataError: If the data cannot be read.
    """
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    check_config(config)
    if config.architecture == HYBRID_LITE0 and config.backbone_tuning != "all":
        if val_records is not None:
            raise TrainingError("The cached hybrid recipe chooses its threshold by CV itself.")
        return train_hybrid(config, records=records, progress=progress)
    run = _set_up(config, records, val_records)
    state = _resume(run)
    teacher, teacher_summary = prepare_teacher(
        config,
        output_dir=run.output_dir,
        train_set=run.train_set,
        val_set=run.val_set,
        validation=run.validation,
        loss_fn=run.loss_fn,
        device=run.device,
        precision=run.precision,
        num_classes=len(run.spec.class_names),
        positive_index=run.spec.positive_index,
        positive=run.spec.positive_class,
    )
    pretrain_summary = prepare_pretraining(
        config,
        run.network,
        run.train_set,
        path=run.output_dir / PRETRAINED_FILE,
        resumed=state.epoch > 0,
        device=run.device,
        precision=run.precision,
    )
    _log_start(run)
    step_loss = _student_step_loss(run, teacher)
    while state.epoch < config.epochs and not state.stopped_early:
        line = _train_one_epoch(run, state, step_loss, progress=progress)
        if on_epoch_end is not None:
            on_epoch_end(state.epoch, line)
    if state.best_model is not None:
        run.network.load_state_dict(state.best_model)
    return finalize(
        config,
        spec=run.spec,
        network=run.network,
        validation=run.validation,
        val_set=run.val_set,
        state=state,
        provenance=Provenance(
            train_records=run.train_records,
            data_fingerprint=run.data_fingerprint,
            device=run.device,
            precision=run.precision,
            teacher=teacher_summary,
            pretraining=pretrain_summary,
            init=run.init,
        ),
    )


def _split(
    config: TrainConfig,
    records: Sequence[SliceRecord] | None,
    val_records: Sequence[SliceRecord] | None,
) -> tuple[list[SliceRecord], list[SliceRecord]]:
    all_records = list(records) if records is not None else load_records(config.data_dir)
    if config.limit is not None:
        all_records = limit_records(all_records, config.limit)
    if config.slice_labels is not None:
        all_records = with_slice_labels(all_records, config.slice_labels, config.slice_label_column)
    if val_records is not None:
        return all_records, list(val_records)
    keep, held = patient_holdout(all_records, config.val_fraction, seed=config.seed)
    return [all_records[i] for i in keep], [all_records[i] for i in held]


def _set_up(
    config: TrainConfig,
    records: Sequence[SliceRecord] | None,
    val_records: Sequence[SliceRecord] | None,
) -> _Run:
    """Data, seeded network, loss and optimiser of a fresh run."""
    train_records, validation = _split(config, records, val_records)
    if not train_records or not validation:
        raise DataError("Training needs both training and validation slices.")
    spec = build_spec(config)
    device = select_device(config.device)
    precision = resolve_precision(config.precision, device, bf16_vetted=True)
    seed_everything(config.seed)
    init_record = None
    if config.init is not None:
        network, spec, init_record = initial_network(config, spec)
    else:
        network = build_network(spec)
        if spec.architecture == HYBRID_LITE0:
            init_record = {**load_imagenet_backbone(hybrid_backbone(network)), "head_new": True}
    network = network.to(device)
    frozen = freeze_blocks(network, config.freeze_blocks)
    if frozen:
        logger.info(
            "Froze %d parameter tensors; %d parameters train",
            len(frozen),
            trainable_parameters(network),
        )
    train_set = SliceDataset(
        train_records,
        spec,
        augmentation=Augmentation(config.augmentation),
        shuffle_slice_order=config.shuffle_slice_order,
        seed=config.seed,
    )
    val_set = SliceDataset(
        validation, spec, shuffle_slice_order=config.shuffle_slice_order, seed=config.seed
    )
    bags = (
        BagSampler.build(
            train_records,
            positive_class=spec.positive_class,
            positive_index=spec.positive_index,
            bag_size=config.bag_size,
            bag_top_k=config.bag_top_k,
            batch_size=config.batch_size,
        )
        if config.objective == "bag"
        else None
    )
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    optimizer, scheduler = optimiser(
        parameter_groups(network, config) or network.parameters(),
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_epochs * steps_per_epoch,
        total_steps=config.epochs * steps_per_epoch,
    )
    return _Run(
        config=config,
        config_dict=config.as_json_dict(),
        spec=spec,
        train_records=train_records,
        validation=validation,
        data_fingerprint=fingerprint([*train_records, *validation]),
        device=device,
        precision=precision,
        network=network,
        train_set=train_set,
        val_set=val_set,
        loss_fn=_class_loss(config, spec, train_records, device),
        bags=bags,
        optimizer=optimizer,
        scheduler=scheduler,
        steps_per_epoch=steps_per_epoch,
        init=init_record,
    )


def _class_loss(
    config: TrainConfig, spec: ModelSpec, records: Sequence[SliceRecord], device: torch.device
) -> nn.Module:
    """Cross-entropy, class-balanced unless the config says otherwise."""
    weight = None
    if config.class_balanced:
        labels = np.array(label_index(records, spec.class_names))
        counts = np.bincount(labels, minlength=len(spec.class_names)).astype(np.float64)
        weight = torch.tensor(
            len(labels) / (len(counts) * np.maximum(counts, 1.0)), dtype=torch.float32
        ).to(device)
    return nn.CrossEntropyLoss(weight=weight)


def _resume(run: _Run) -> RunState:
    """The state of an interrupted run in the same folder, restored; else a fresh one.

    Raises:
        TrainingError: If the folder holds a run with another config or other data.
    """
    path = run.output_dir / STATE_FILE
    if not path.is_file():
        return RunState()
    saved = load_own(path)
    different = config_differences(saved["config"], run.config_dict)
    if different or saved["data_fingerprint"] != run.data_fingerprint:
        raise TrainingError(
            f"The output folder {run.output_dir} holds a different run (changed: "
            f"{', '.join(different) or 'the data'}); choose a new output folder."
        )
    run.network.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    state = RunState.from_saved(saved)
    logger.info("Resuming %s after epoch %s", run.output_dir, state.epoch)
    return state


def _log_start(run: _Run) -> None:
    logger.info(
        "Training %s on %s slices (%s patients), validating on %s slices (%s patients); %s, %s",
        run.config.architecture,
        len(run.train_records),
        len({r.patient for r in run.train_records}),
        len(run.validation),
        len({r.patient for r in run.validation}),
        run.device,
        run.precision,
    )


def _student_step_loss(run: _Run, teacher: nn.Module | None) -> StepLoss:
    """The network's loss of one batch: labels, bags, or labels and a teacher."""
    if teacher is not None:
        return distilled_step_loss(
            run.network,
            teacher,
            run.config,
            loss_fn=run.loss_fn,
            device=run.device,
            precision=run.precision,
        )
    loss_fn = run.loss_fn if run.bags is None else run.bags.loss

    def step_loss(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with autocast(run.device, run.precision):
            logits = run.network(images)
        loss: torch.Tensor = loss_fn(logits.float(), targets)
        return loss

    return step_loss


def _train_one_epoch(
    run: _Run, state: RunState, step_loss: StepLoss, *, progress: bool
) -> dict[str, Any]:
    """Trains and validates one epoch, then saves the run's state; returns the log line."""
    config = run.config
    epoch = state.epoch + 1
    started = time.perf_counter()
    run.train_set.set_epoch(epoch)
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    if run.bags is None:
        order = torch.randperm(len(run.train_set), generator=generator).tolist()
        batch_size = config.batch_size
    else:
        order = run.bags.order(run.steps_per_epoch, generator)
        batch_size = run.bags.batch_size
    train_loss = train_epoch(
        run.network,
        batches(run.train_set, order, batch_size, config.num_workers),
        step_loss=step_loss,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        device=run.device,
        progress=f"epoch {epoch}/{config.epochs}" if progress else None,
        total=run.steps_per_epoch,
    )
    line = _validate(run, epoch, train_loss)
    line["seconds"] = round(time.perf_counter() - started, 3)
    _update_best(run, state, epoch, line)
    line["best_epoch"] = state.best_epoch
    with (run.output_dir / LOG_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
    atomic_torch_save(
        {
            **state.as_dict(),
            "config": run.config_dict,
            "data_fingerprint": run.data_fingerprint,
            "model": run.network.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "rng": rng_state(),
        },
        run.output_dir / STATE_FILE,
    )
    logger.info(
        "Epoch %s: train loss %.4f, val loss %.4f, val series AUC %.3f (%.1f s)",
        epoch,
        line["train_loss"],
        line["val_loss"],
        line["val_series_auc"],
        line["seconds"],
    )
    if state.stopped_early:
        logger.info("Early stopping after epoch %s (best epoch %s)", epoch, state.best_epoch)
    return line


def _validate(run: _Run, epoch: int, train_loss: float) -> dict[str, Any]:
    """The epoch's log line, without its duration: losses, AUCs and learning rate."""
    config, spec = run.config, run.spec
    probabilities, val_loss = predict(
        run.network,
        run.val_set,
        device=run.device,
        precision=run.precision,
        batch_size=config.batch_size,
        positive_index=spec.positive_index,
        loss_fn=run.loss_fn,
    )
    slice_auc, series_auc = validation_aucs(
        run.validation, probabilities, k=config.top_k, positive_label=spec.positive_class
    )
    if run.bags is not None:
        val_loss = run.bags.patient_loss(run.validation, probabilities, k=config.top_k)
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_slice_auc": slice_auc,
        "val_series_auc": series_auc,
        "lr": run.optimizer.param_groups[0]["lr"],
    }


def _update_best(run: _Run, state: RunState, epoch: int, line: dict[str, Any]) -> None:
    """Keeps the best epoch's weights and counts epochs without improvement."""
    config = run.config
    higher_is_better = config.early_stopping_metric == "val_auc"
    metric = line["val_series_auc"] if higher_is_better else line["val_loss"]
    best = state.best_metric
    improved = best is None or (
        not math.isnan(metric) and (metric > best if higher_is_better else metric < best)
    )
    if improved:
        state.best_metric = metric
        state.best_epoch = epoch
        state.best_model = {
            k: v.detach().cpu().clone() for k, v in run.network.state_dict().items()
        }
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
        if config.patience and state.bad_epochs >= config.patience:
            state.stopped_early = True
    state.epoch = epoch
