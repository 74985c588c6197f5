"""Training: a seeded, resumable loop that ends in a checkpoint with its decision rule.

The run writes into one output folder: ``last.pt`` (full training state, rewritten every epoch),
``train_log.jsonl`` (one line per epoch) and finally the checkpoint itself
(``model.safetensors`` + ``spec.json``). Rerunning with the same folder resumes from ``last.pt``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.aggregate import AGGREGATION_RULES, aggregate
from model.bags import BagSampler
from model.checkpoint import save_checkpoint
from model.data import (
    Augmentation,
    DataError,
    SliceDataset,
    SliceRecord,
    fingerprint,
    group_by_patient,
    label_index,
    load_records,
    patient_holdout,
)
from model.distill import DistillationMode, build_teacher, distillation_loss, train_teacher
from model.errors import ModelError
from model.inference import cpu_supports_bf16, select_device
from model.metrics import binary_metrics, roc_auc, threshold_for_sensitivity
from model.network import build_network
from model.preprocess import WINDOW_PRESETS, ChannelMode
from model.pretrain import check_encoder, pretrain_encoder
from model.schedule import warmup_cosine
from model.spec import AggregationSpec, ModelSpec, WindowSpec

logger = logging.getLogger(__name__)

STATE_FILE = "last.pt"
TEACHER_FILE = "teacher.pt"
PRETRAINED_FILE = "pretrained.pt"
LOG_FILE = "train_log.jsonl"

KAGGLE_JPEG_WINDOW = "kaggle_jpeg=36/150"
"""The CT window that best reproduces the Kaggle JPEGs (benchmarks/window_match.py)."""

# Config fields that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = frozenset(
    {"epochs", "patience", "device", "num_workers", "num_threads", "data_dir", "output_dir"}
)


class TrainingError(ModelError):
    """Training cannot start or continue as configured."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint's spec)."""

    data_dir: Path
    output_dir: Path = Path("runs/train")
    architecture: str = "vit_base_patch16_224"
    input_size: int = 224
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    patience: int = 5
    """Epochs without improvement of the early-stopping metric before stopping; 0 never stops."""
    early_stopping_metric: str = "val_loss"
    """``val_loss`` (lower is better) or ``val_auc`` (series-level, higher is better)."""
    augmentation: str = Augmentation.LIGHT.value
    channel_mode: str = ChannelMode.REPLICATE.value
    windows: list[str] = field(default_factory=lambda: [KAGGLE_JPEG_WINDOW])
    """Windows the spec records for inference on HU: preset names or ``name=center/width``.

    The JPEGs were windowed before export, so this does not change training; it must be the
    window that reproduces the JPEGs (see docs/window-matching.md).
    """
    shuffle_slice_order: bool = False
    """Control for the slice-numbering shortcut: random neighbour order within each patient."""
    class_balanced: bool = True
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    """``auto`` (bf16 autocast on CUDA or where the CPU has native bf16), ``fp32`` or ``bf16``."""
    val_fraction: float = 0.15
    target_sensitivity: float = 0.95
    top_k: int = 5
    num_workers: int = 0
    num_threads: int | None = None
    limit: int | None = None
    """Use at most this many slices, taken as whole patients from both classes (tests)."""
    version: str | None = None
    teacher_architecture: str | None = None
    """A timm CNN (e.g. ``resnet18``) trained first on the same slices as a DeiT-style teacher."""
    teacher_epochs: int | None = None
    """Teacher epochs (default: ``epochs``)."""
    distillation: str = DistillationMode.HARD.value
    distill_weight: float = 0.5
    distill_temperature: float = 1.0
    objective: str = "slice"
    """``slice`` (every slice carries its patient's label) or ``bag`` (model.bags: bags of
    ``bag_size`` slices of one patient, scored by the mean of their ``bag_top_k`` highest)."""
    bag_size: int = 8
    bag_top_k: int = 2
    pretrain_epochs: int = 0
    """Masked-autoencoder pretraining of the encoder on the training slices (model.pretrain)."""
    pretrain_mask_ratio: float = 0.75

    def as_json_dict(self) -> dict[str, Any]:
        """The config with paths as strings, ready for JSON."""
        values = asdict(self)
        values["data_dir"] = str(self.data_dir)
        values["output_dir"] = str(self.output_dir)
        values["mean"] = list(self.mean)
        values["std"] = list(self.std)
        return values


def limit_records(records: Sequence[SliceRecord], limit: int) -> list[SliceRecord]:
    """At most ``limit`` slices as whole patients, alternating between the labels."""
    by_label: dict[str, list[list[SliceRecord]]] = {}
    for indices in group_by_patient(records).values():
        members = [records[i] for i in indices]
        by_label.setdefault(members[0].label, []).append(members)
    queues = [iter(by_label[label]) for label in sorted(by_label)]
    chosen: list[SliceRecord] = []
    while queues:
        for queue in list(queues):
            patient = next(queue, None)
            if patient is None:
                queues.remove(queue)
            elif len(chosen) + len(patient) <= limit or not chosen:
                chosen.extend(patient)
            else:
                queues.remove(queue)
    return chosen


def parse_window(text: str) -> WindowSpec:
    """A window from a preset name (``brain``) or ``name=center/width`` (``kaggle=36/150``).

    Raises:
        TrainingError: If the text is neither.
    """
    if text in WINDOW_PRESETS:
        preset = WINDOW_PRESETS[text]
        return WindowSpec(name=text, center=preset.center, width=preset.width)
    name, _, values = text.partition("=")
    center, _, width = values.partition("/")
    try:
        return WindowSpec(name=name.strip(), center=float(center), width=float(width))
    except ValueError as error:
        raise TrainingError(
            f"The window {text!r} is neither a preset ({', '.join(sorted(WINDOW_PRESETS))}) "
            "nor of the form name=center/width with a positive width."
        ) from error


def build_spec(config: TrainConfig) -> ModelSpec:
    """The (untrained) spec a config describes."""
    windows = [parse_window(text) for text in config.windows]
    try:
        return ModelSpec(
            architecture=config.architecture,
            input_size=config.input_size,
            model_kwargs=dict(config.model_kwargs),
            windows=windows,
            channel_mode=ChannelMode(config.channel_mode),
            mean=config.mean,
            std=config.std,
            aggregation=AggregationSpec(rule="top_k_mean", k=config.top_k),
            threshold=0.5,
            trained=False,
            version=config.version or "untrained",
        )
    except ValueError as error:
        raise TrainingError(
            f"The training config does not make a valid model spec: {error}"
        ) from error


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision in ("fp32", "bf16"):
        return precision
    if precision != "auto":
        raise TrainingError(f"Unknown precision {precision!r}; expected auto, fp32 or bf16.")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def _autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def _atomic_torch_save(obj: dict[str, Any], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _batches(
    dataset: SliceDataset, order: Sequence[int], batch_size: int, num_workers: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=list(order), num_workers=num_workers
    )
    yield from loader


@dataclass
class _Predictions:
    probabilities: npt.NDArray[np.float64]
    loss: float


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
        for images, labels in _batches(dataset, range(len(dataset)), batch_size, 0):
            with _autocast(device, precision):
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


def _split(
    config: TrainConfig,
    records: Sequence[SliceRecord] | None,
    val_records: Sequence[SliceRecord] | None,
) -> tuple[list[SliceRecord], list[SliceRecord]]:
    all_records = list(records) if records is not None else load_records(config.data_dir)
    if config.limit is not None:
        all_records = limit_records(all_records, config.limit)
    if val_records is not None:
        return all_records, list(val_records)
    keep, held = patient_holdout(all_records, config.val_fraction, seed=config.seed)
    return [all_records[i] for i in keep], [all_records[i] for i in held]


def _config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return sorted(
        key
        for key in set(saved) | set(current)
        if key not in _RESUMABLE_CHANGES and saved.get(key) != current.get(key)
    )


def train(
    config: TrainConfig,
    *,
    records: Sequence[SliceRecord] | None = None,
    val_records: Sequence[SliceRecord] | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
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
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if config.objective not in ("slice", "bag"):
        raise TrainingError(f"Unknown objective {config.objective!r}; expected slice or bag.")
    if config.objective == "bag" and config.teacher_architecture:
        raise TrainingError("Distillation from a teacher needs the slice objective.")
    if config.objective == "bag" and not 1 <= config.bag_top_k <= config.bag_size <= (
        config.batch_size
    ):
        raise TrainingError(
            "The bag objective needs 1 <= bag_top_k <= bag_size <= batch_size; got "
            f"{config.bag_top_k}, {config.bag_size} and {config.batch_size}."
        )
    if config.early_stopping_metric not in ("val_loss", "val_auc"):
        raise TrainingError(
            f"Unknown early-stopping metric {config.early_stopping_metric!r}; "
            "expected val_loss or val_auc."
        )
    train_records, validation = _split(config, records, val_records)
    if not train_records or not validation:
        raise DataError("Training needs both training and validation slices.")
    spec = build_spec(config)
    data_fingerprint = fingerprint([*train_records, *validation])
    device = select_device(config.device)
    precision = _resolve_precision(config.precision, device)
    positive = spec.positive_class

    seed_everything(config.seed)
    network = build_network(spec).to(device)
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
    labels = np.array(label_index(train_records, spec.class_names))
    weight = None
    if config.class_balanced:
        counts = np.bincount(labels, minlength=len(spec.class_names)).astype(np.float64)
        weight = torch.tensor(
            len(labels) / (len(counts) * np.maximum(counts, 1.0)), dtype=torch.float32
        ).to(device)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
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
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    scheduler = warmup_cosine(
        optimizer,
        warmup_steps=config.warmup_epochs * steps_per_epoch,
        total_steps=config.epochs * steps_per_epoch,
    )
    config_dict = config.as_json_dict()
    higher_is_better = config.early_stopping_metric == "val_auc"
    state: dict[str, Any] = {
        "epoch": 0,
        "best_metric": None,
        "best_epoch": 0,
        "best_model": None,
        "bad_epochs": 0,
        "stopped_early": False,
    }
    state_path = output_dir / STATE_FILE
    if state_path.is_file():
        # Our own file, holding numpy RNG state: weights_only loading would refuse it.
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        different = _config_differences(saved["config"], config_dict)
        if different or saved["data_fingerprint"] != data_fingerprint:
            raise TrainingError(
                f"The output folder {output_dir} holds a different run (changed: "
                f"{', '.join(different) or 'the data'}); choose a new output folder."
            )
        network.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"])
        state = {key: saved[key] for key in state}
        logger.info("Resuming %s after epoch %s", output_dir, state["epoch"])

    teacher, teacher_summary = _prepare_teacher(
        config,
        output_dir=output_dir,
        train_set=train_set,
        val_set=val_set,
        validation=validation,
        loss_fn=loss_fn,
        device=device,
        precision=precision,
        num_classes=len(spec.class_names),
        positive_index=spec.positive_index,
        positive=positive,
    )
    pretrain_summary = _prepare_pretraining(
        config,
        network,
        train_set,
        path=output_dir / PRETRAINED_FILE,
        resumed=int(state["epoch"]) > 0,
        device=device,
        precision=precision,
    )
    log_path = output_dir / LOG_FILE
    logger.info(
        "Training %s on %s slices (%s patients), validating on %s slices (%s patients); %s, %s",
        config.architecture,
        len(train_records),
        len({r.patient for r in train_records}),
        len(validation),
        len({r.patient for r in validation}),
        device,
        precision,
    )
    epoch = int(state["epoch"])
    while epoch < config.epochs and not state["stopped_early"]:
        epoch += 1
        started = time.perf_counter()
        network.train()
        train_set.set_epoch(epoch)
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        train_loss_fn: nn.Module
        if bags is None:
            order = torch.randperm(len(train_set), generator=generator).tolist()
            batch_size, train_loss_fn = config.batch_size, loss_fn
        else:
            order = bags.order(steps_per_epoch, generator)
            batch_size, train_loss_fn = bags.batch_size, bags.loss
        total, seen = 0.0, 0
        bar = tqdm(
            _batches(train_set, order, batch_size, config.num_workers),
            total=steps_per_epoch,
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not progress,
            leave=False,
        )
        for batch_images, batch_targets in bar:
            images, targets = batch_images.to(device), batch_targets.to(device)
            with _autocast(device, precision):
                logits = network(images)
            if teacher is None:
                loss = train_loss_fn(logits.float(), targets)
            else:
                with torch.no_grad(), _autocast(device, precision):
                    teacher_logits = teacher(images)
                loss = distillation_loss(
                    logits.float(),
                    teacher_logits,
                    targets,
                    base_loss=loss_fn,
                    mode=config.distillation,
                    weight=config.distill_weight,
                    temperature=config.distill_temperature,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.item()) * len(targets)
            seen += len(targets)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        probabilities, val_loss = predict(
            network,
            val_set,
            device=device,
            precision=precision,
            batch_size=config.batch_size,
            positive_index=spec.positive_index,
            loss_fn=loss_fn,
        )
        val_labels = np.array([int(r.label == positive) for r in validation])
        _, series_labels, series = series_scores(
            validation, probabilities, rule="top_k_mean", k=config.top_k, positive_label=positive
        )
        if bags is not None:
            val_loss = bags.patient_loss(validation, probabilities, k=config.top_k)
        line: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": total / max(1, seen),
            "val_loss": val_loss,
            "val_slice_auc": roc_auc(val_labels, probabilities),
            "val_series_auc": roc_auc(series_labels, series),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 3),
        }
        metric = line["val_series_auc"] if higher_is_better else val_loss
        best = state["best_metric"]
        improved = best is None or (
            not math.isnan(metric) and (metric > best if higher_is_better else metric < best)
        )
        if improved:
            state.update(
                best_metric=metric,
                best_epoch=epoch,
                best_model={k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
                bad_epochs=0,
            )
        else:
            state["bad_epochs"] += 1
            if config.patience and state["bad_epochs"] >= config.patience:
                state["stopped_early"] = True
        state["epoch"] = epoch
        line["best_epoch"] = state["best_epoch"]
        with log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
        _atomic_torch_save(
            {
                **state,
                "config": config_dict,
                "data_fingerprint": data_fingerprint,
                "model": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
            },
            state_path,
        )
        logger.info(
            "Epoch %s: train loss %.4f, val loss %.4f, val series AUC %.3f (%.1f s)",
            epoch,
            line["train_loss"],
            val_loss,
            line["val_series_auc"],
            line["seconds"],
        )
        if state["stopped_early"]:
            logger.info("Early stopping after epoch %s (best epoch %s)", epoch, state["best_epoch"])
        if on_epoch_end is not None:
            on_epoch_end(epoch, line)

    if state["best_model"] is not None:
        network.load_state_dict(state["best_model"])
    return _finalize(
        config,
        spec=spec,
        network=network,
        validation=validation,
        train_records=train_records,
        val_set=val_set,
        device=device,
        precision=precision,
        data_fingerprint=data_fingerprint,
        state=state,
        teacher_summary=teacher_summary,
        pretrain_summary=pretrain_summary,
    )


def _prepare_pretraining(
    config: TrainConfig,
    network: nn.Module,
    train_set: SliceDataset,
    *,
    path: Path,
    resumed: bool,
    device: torch.device,
    precision: str,
) -> dict[str, Any] | None:
    """Pretrains the encoder once; ``pretrained.pt`` keeps it for a run that resumes."""
    if config.pretrain_epochs <= 0:
        return None
    check_encoder(network)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if not resumed:  # a resumed run already holds these weights, trained further
            network.load_state_dict(saved["model"])
        summary: dict[str, Any] = saved["summary"]
        return summary
    if resumed:
        raise TrainingError(f"{path} is missing, so this run cannot resume; start a new one.")
    summary = pretrain_encoder(
        network,
        train_set,
        epochs=config.pretrain_epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        mask_ratio=config.pretrain_mask_ratio,
        seed=config.seed,
        device=device,
        autocast=lambda: _autocast(device, precision),
    )
    _atomic_torch_save({"model": network.state_dict(), "summary": summary}, path)
    return summary


def _prepare_teacher(
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
    """Builds the CNN teacher: loaded from ``teacher.pt`` when a run resumes, else trained."""
    if config.teacher_architecture is None:
        return None, None
    DistillationMode(config.distillation)
    teacher = build_teacher(config.teacher_architecture, num_classes=num_classes).to(device)
    path = output_dir / TEACHER_FILE
    epochs = config.teacher_epochs or config.epochs
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        teacher.load_state_dict(saved["model"])
        losses = list(saved["losses"])
        teacher.eval()
        logger.info("Loaded the teacher from %s", path)
    else:

        def epoch_batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            train_set.set_epoch(epoch)
            generator = torch.Generator().manual_seed(config.seed * 100_003 + 7_919 * epoch)
            order = torch.randperm(len(train_set), generator=generator).tolist()
            yield from _batches(train_set, order, config.batch_size, config.num_workers)

        losses = train_teacher(
            teacher,
            (epoch_batches(epoch) for epoch in range(1, epochs + 1)),
            steps_per_epoch=steps_per_epoch,
            lr=config.lr,
            weight_decay=config.weight_decay,
            warmup_epochs=config.warmup_epochs,
            loss_fn=loss_fn,
            device=device,
            precision=precision,
        )
        _atomic_torch_save({"model": teacher.state_dict(), "losses": losses}, path)
    probabilities, val_loss = predict(
        teacher,
        val_set,
        device=device,
        precision=precision,
        batch_size=config.batch_size,
        positive_index=positive_index,
        loss_fn=loss_fn,
    )
    _, series_labels, series = series_scores(
        validation, probabilities, rule="top_k_mean", k=config.top_k, positive_label=positive
    )
    val_labels = np.array([int(r.label == positive) for r in validation])
    summary = {
        "architecture": config.teacher_architecture,
        "epochs": epochs,
        "final_train_loss": losses[-1] if losses else None,
        "val_loss": val_loss,
        "val_slice_auc": roc_auc(val_labels, probabilities),
        "val_series_auc": roc_auc(series_labels, series),
    }
    logger.info(
        "Teacher %s: train loss %.4f, val series AUC %.3f",
        config.teacher_architecture,
        summary["final_train_loss"] or float("nan"),
        summary["val_series_auc"],
    )
    return teacher, summary


def _finalize(
    config: TrainConfig,
    *,
    spec: ModelSpec,
    network: nn.Module,
    validation: Sequence[SliceRecord],
    train_records: Sequence[SliceRecord],
    val_set: SliceDataset,
    device: torch.device,
    precision: str,
    data_fingerprint: str,
    state: dict[str, Any],
    teacher_summary: dict[str, Any] | None = None,
    pretrain_summary: dict[str, Any] | None = None,
) -> Path:
    """Chooses the decision rule on the validation patients and saves the checkpoint."""
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
        "bf16_agrees_with_fp32": bool(
            np.array_equal(series >= threshold, series_bf16 >= threshold)
        ),
        "bf16_max_abs_difference": float(np.max(np.abs(outputs["fp32"] - outputs["bf16"]))),
    }
    created = datetime.now(UTC)
    training = {
        "command": shlex.join(sys.argv),
        "seed": config.seed,
        "config": config.as_json_dict(),
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped_early"],
        "train_patients": len({r.patient for r in train_records}),
        "train_slices": len(train_records),
        "device": str(device),
        "precision": precision,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
    }
    if teacher_summary is not None:
        training["teacher"] = teacher_summary
    if pretrain_summary is not None:
        training["pretraining"] = pretrain_summary
    final = spec.model_copy(
        update={
            "aggregation": AggregationSpec(rule=rule, k=config.top_k),
            "threshold": float(min(1.0, max(0.0, threshold))),
            "trained": True,
            "data_fingerprint": data_fingerprint,
            "metrics": metrics,
            "training": training,
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
