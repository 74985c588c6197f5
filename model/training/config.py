"""What a training run is: its configuration, the spec it builds, and how both are recorded.

Imports neither torch nor timm, so the command line can build its ``train`` options from
:class:`TrainConfig` without loading them.
"""

from __future__ import annotations

import shlex
import typing
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from model.architectures import HYBRID_LITE0, IMAGENET_MEAN, IMAGENET_STD
from model.errors import ModelError
from model.spec import (
    INTRACRANIAL_HAEMORRHAGE,
    STROKE,
    WINDOW_PRESETS,
    AggregationSpec,
    ChannelMode,
    ModelSpec,
    WindowSpec,
)

KAGGLE_JPEG_WINDOW = "kaggle_jpeg=36/150"
"""The CT window that best reproduces the Kaggle JPEGs (benchmarks/window_match.py)."""

OBJECTIVES = ("slice", "bag")
EARLY_STOPPING_METRICS = ("val_loss", "val_auc")
PRECISION_CHOICES = ("auto", "fp32", "bf16")


class TrainingError(ModelError):
    """Training cannot start or continue as configured."""


class Augmentation(StrEnum):
    """How much random augmentation the training data gets."""

    NONE = "none"
    """No augmentation: the evaluation setting."""
    LIGHT = "light"
    """Horizontal flip and a small rotation, shift and zoom."""
    FULL = "full"
    """Light plus intensity (brightness and contrast) jitter and a larger affine range."""


class DistillationMode(StrEnum):
    """How the teacher's output enters the student's loss."""

    HARD = "hard"
    """The teacher's argmax is a second target (cross-entropy), as in DeiT."""
    SOFT = "soft"
    """KL divergence to the teacher's probabilities at a temperature."""


@dataclass(frozen=True)
class Option:
    """How one config field appears on the command line (``stroke-triage train``)."""

    flag: str
    help: str | None = None
    choices: tuple[str, ...] | None = None
    required: bool = False
    negated: bool = False
    """A boolean field whose flag turns it off (``--no-class-balance``)."""


def _cli(flag: str, **kw: Any) -> dict[str, Option]:
    return {"cli": Option(flag, **kw)}


def _values(enum: type[StrEnum]) -> tuple[str, ...]:
    return tuple(member.value for member in enum)


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint's spec).

    Fields with a command-line option carry it in their metadata (``cli``), so the options and
    their defaults are made from this class (:func:`cli_fields`).
    """

    data_dir: Path = field(metadata=_cli("--data", required=True, help="folder with manifest.csv"))
    output_dir: Path = Path("runs/train")
    architecture: str = field(
        default="vit_base_patch16_224", metadata=_cli("--arch", help="timm architecture name")
    )
    input_size: int = field(default=224, metadata=_cli("--input-size"))
    model_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata=_cli(
            "--model-kwargs",
            help="extra timm kwargs as JSON, e.g. "
            '\'{"embed_dim": 96, "depth": 4, "num_heads": 3}\'',
        ),
    )
    epochs: int = field(default=30, metadata=_cli("--epochs"))
    batch_size: int = field(default=32, metadata=_cli("--batch-size"))
    lr: float = field(default=1e-4, metadata=_cli("--lr"))
    weight_decay: float = field(default=0.05, metadata=_cli("--weight-decay"))
    warmup_epochs: int = field(default=1, metadata=_cli("--warmup-epochs"))
    patience: int = field(default=5, metadata=_cli("--patience", help="early stopping; 0 = never"))
    """Epochs without improvement of the early-stopping metric before stopping; 0 never stops."""
    early_stopping_metric: str = field(
        default="val_loss",
        metadata=_cli(
            "--early-stopping",
            choices=EARLY_STOPPING_METRICS,
            help="validation metric that picks the best epoch and drives early stopping",
        ),
    )
    """``val_loss`` (lower is better) or ``val_auc`` (series-level, higher is better)."""
    augmentation: str = field(
        default=Augmentation.LIGHT.value,
        metadata=_cli("--augment", choices=_values(Augmentation)),
    )
    channel_mode: str = field(
        default=ChannelMode.REPLICATE.value,
        metadata=_cli("--channel-mode", choices=_values(ChannelMode)),
    )
    windows: list[str] = field(
        default_factory=lambda: [KAGGLE_JPEG_WINDOW],
        metadata=_cli(
            "--window",
            help="window stored for inference on HU, repeatable: preset or name=center/width",
        ),
    )
    """Windows the spec records for inference on HU: preset names or ``name=center/width``.

    The JPEGs were windowed before export, so this does not change training; it must be the
    window that reproduces the JPEGs (see docs/window-matching.md).
    """
    shuffle_slice_order: bool = field(
        default=False,
        metadata=_cli(
            "--shuffle-slice-order",
            help="control: neighbours in random order within each patient (adjacent mode)",
        ),
    )
    """Control for the slice-numbering shortcut: random neighbour order within each patient."""
    class_balanced: bool = field(
        default=True,
        metadata=_cli(
            "--no-class-balance",
            negated=True,
            help="plain cross-entropy instead of class-balanced weights",
        ),
    )
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    seed: int = field(default=0, metadata=_cli("--seed"))
    device: str = field(default="auto", metadata=_cli("--device", help="auto, cpu, cuda or cuda:N"))
    precision: str = field(default="auto", metadata=_cli("--precision", choices=PRECISION_CHOICES))
    """``auto`` (bf16 autocast on CUDA or where the CPU has native bf16), ``fp32`` or ``bf16``."""
    val_fraction: float = field(default=0.15, metadata=_cli("--val-fraction"))
    target_sensitivity: float = 0.95
    top_k: int = field(default=5, metadata=_cli("--top-k", help="k of the top-k mean rule"))
    num_workers: int = 0
    num_threads: int | None = field(
        default=None, metadata=_cli("--threads", help="CPU threads for torch")
    )
    limit: int | None = field(
        default=None, metadata=_cli("--limit", help="use at most this many slices")
    )
    """Use at most this many slices, taken as whole patients from both classes (tests)."""
    version: str | None = field(
        default=None, metadata=_cli("--version", help="version label stored in the spec")
    )
    teacher_architecture: str | None = field(
        default=None,
        metadata=_cli(
            "--teacher",
            help="timm CNN (e.g. resnet18) trained first on the same slices as a DeiT-style "
            "teacher",
        ),
    )
    """A timm CNN (e.g. ``resnet18``) trained first on the same slices as a DeiT-style teacher."""
    teacher_epochs: int | None = field(
        default=None, metadata=_cli("--teacher-epochs", help="default: --epochs")
    )
    """Teacher epochs (default: ``epochs``)."""
    distillation: str = field(
        default=DistillationMode.HARD.value,
        metadata=_cli("--distillation", choices=_values(DistillationMode)),
    )
    distill_weight: float = field(
        default=0.5, metadata=_cli("--distill-weight", help="share of teacher loss")
    )
    distill_temperature: float = field(
        default=1.0, metadata=_cli("--distill-temperature", help="soft mode only")
    )
    objective: str = field(
        default="slice",
        metadata=_cli(
            "--objective",
            choices=OBJECTIVES,
            help="slice: every slice has its patient's label; bag: bags of one patient's slices "
            "scored by their top-k mean (multiple-instance learning)",
        ),
    )
    """``slice`` (every slice carries its patient's label) or ``bag`` (model.training.bags:
    bags of ``bag_size`` slices of one patient, scored by the mean of their ``bag_top_k``
    highest)."""
    bag_size: int = field(
        default=8, metadata=_cli("--bag-size", help="slices per bag (bag objective)")
    )
    bag_top_k: int = field(default=2, metadata=_cli("--bag-top-k", help="slices that score a bag"))
    pretrain_epochs: int = field(
        default=0,
        metadata=_cli(
            "--pretrain-epochs",
            help="masked-autoencoder pretraining of the ViT on the training slices first "
            "(plain ViT)",
        ),
    )
    """Masked-autoencoder pretraining of the encoder on the training slices (``pretrain``)."""
    pretrain_mask_ratio: float = field(default=0.75, metadata=_cli("--pretrain-mask-ratio"))
    init: Path | None = field(
        default=None,
        metadata=_cli(
            "--init",
            help="start from local weights: a checkpoint directory (e.g. from import-model) or "
            "a timm state dict file (.safetensors, .pth, .bin)",
        ),
    )
    """Initial weights; the head is re-initialised when its class count differs."""
    layer_decay: float | None = field(
        default=None,
        metadata=_cli(
            "--layer-decay",
            help="layer-wise learning-rate decay, e.g. 0.75: each block from the top trains at "
            "this factor of the one above",
        ),
    )
    freeze_blocks: int = field(
        default=0,
        metadata=_cli(
            "--freeze-blocks", help="freeze the patch embedding and the first N transformer blocks"
        ),
    )

    slice_labels: Path | None = field(
        default=None,
        metadata=_cli(
            "--slice-labels",
            help="CSV of slice labels (slice-labels.csv: path, patient, slice and label columns); "
            "slices it labels train on their own label, the rest on their patient's",
        ),
    )
    """Radiologists' slice labels; the patient label stays the series truth."""
    slice_label_column: str = field(
        default="haemorrhage_by_mask",
        metadata=_cli("--slice-label-column", help="the 0/1 column of --slice-labels"),
    )
    backbone_tuning: str = field(
        default="frozen",
        metadata=_cli(
            "--backbone-tuning",
            choices=("frozen", "tail", "all"),
            help=f"{HYBRID_LITE0} only: frozen ImageNet backbone, its stages from --backbone-cut "
            "on tuned (features before the cut cached on disk), or all of it tuned (no cache)",
        ),
    )
    backbone_cut: int = field(
        default=6,
        metadata=_cli(
            "--backbone-cut",
            help="backbone stage whose input is cached (0-6; stages from it on run every step)",
        ),
    )
    feature_cache: Path = field(
        default=Path("runs/feature-cache"),
        metadata=_cli("--feature-cache", help="folder of cached backbone features"),
    )
    cv_folds: int = field(
        default=5,
        metadata=_cli(
            "--cv-folds",
            help=f"{HYBRID_LITE0}: patient-grouped folds whose out-of-fold series scores set the "
            "threshold and the spec's metrics, before the final fit on all patients",
        ),
    )
    cv_bootstrap: int = field(
        default=1000,
        metadata=_cli("--cv-bootstrap", help="bootstrap resamples of the --cv-folds intervals"),
    )
    aggregation: str | None = field(
        default=None,
        metadata=_cli(
            "--aggregation",
            choices=("top_k_mean", "max", "mean"),
            help="series rule (default: the best on validation; top_k_mean for the hybrid)",
        ),
    )

    finding: str = field(
        default="stroke",
        metadata=_cli(
            "--finding",
            choices=("stroke", "ich"),
            help="what the model detects, recorded in the spec: stroke (SCT 230690007) or ich "
            "(SCT 1386000, intracranial haemorrhage: the CT-ICH data)",
        ),
    )
    slice_thickness_mm: float | None = field(
        default=None,
        metadata=_cli(
            "--slice-thickness-mm", help="slice thickness of the training data (5 for CT-ICH)"
        ),
    )

    def as_json_dict(self) -> dict[str, Any]:
        """The config ready for JSON; the data folder relative to its data root.

        The data folder is recorded as :func:`recorded_data_dir` gives it, so no absolute path
        of the training machine ends up in a checkpoint's spec.
        """
        values = asdict(self)
        values["data_dir"] = recorded_data_dir(self.data_dir)
        values["output_dir"] = str(self.output_dir)
        values["init"] = Path(self.init).name if self.init is not None else None
        values["slice_labels"] = (
            Path(self.slice_labels).name if self.slice_labels is not None else None
        )
        values["feature_cache"] = str(self.feature_cache)
        values["mean"] = list(self.mean)
        values["std"] = list(self.std)
        return values


@dataclass(frozen=True)
class CliField:
    """One :class:`TrainConfig` field that has a command-line option."""

    name: str
    option: Option
    kind: type
    """``bool``, ``int``, ``float``, ``str``, ``Path``, ``list`` (repeatable) or ``dict`` (JSON)."""
    default: Any


def cli_fields() -> Iterator[CliField]:
    """The fields of :class:`TrainConfig` that have a command-line option, in field order."""
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig(data_dir=Path())
    for item in fields(TrainConfig):
        option = item.metadata.get("cli")
        if option is None:
            continue
        kind = hints[item.name]
        inner = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        origin = typing.get_origin(kind)
        if origin in (list, dict):
            kind = origin
        elif inner:  # X | None
            kind = inner[0]
        yield CliField(item.name, option, kind, getattr(defaults, item.name))


def recorded_data_dir(data_dir: Path | str) -> str:
    """The data folder as a checkpoint records it: relative to its data root (its parent).

    ``/srv/data/brain-stroke-ct`` and ``../shared/data/brain-stroke-ct`` both become
    ``brain-stroke-ct``: the same data under whichever data root the reader has.
    """
    path = Path(data_dir)
    return path.name or Path(path).resolve().name


def recorded_command(argv: Sequence[str], data_dir: Path | str) -> str:
    """The command line of a run, without the training machine's paths.

    The program is reduced to its name and the data folder to :func:`recorded_data_dir` (also
    where it starts a path, as ``--slice-labels DATA/slice-labels.csv`` does).
    """
    if not argv:
        return ""
    data = {str(data_dir), str(Path(data_dir))}
    relative = recorded_data_dir(data_dir)
    words = [Path(argv[0]).name]
    prefixes = tuple(f"{d.rstrip('/')}/" for d in data)
    for word in argv[1:]:
        if word in data:
            words.append(relative)
        elif word.startswith(prefixes):  # a file in the data folder (--slice-labels)
            words.append(f"{relative}/{word.split('/')[-1]}")
        elif word.startswith("--data=") and word.partition("=")[2] in data:
            words.append(f"--data={relative}")
        else:
            words.append(word)
    return shlex.join(words)


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
    hybrid = config.architecture == HYBRID_LITE0
    # The hybrid's backbone was pretrained on ImageNet: its normalisation comes with it.
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if hybrid else (config.mean, config.std)
    try:
        return ModelSpec(
            architecture=config.architecture,
            input_size=config.input_size,
            model_kwargs=dict(config.model_kwargs),
            windows=windows,
            channel_mode=ChannelMode(config.channel_mode),
            mean=mean,
            std=std,
            aggregation=AggregationSpec(rule=config.aggregation or "top_k_mean", k=config.top_k),
            threshold=0.5,
            trained=False,
            version=config.version or "untrained",
            finding=INTRACRANIAL_HAEMORRHAGE if config.finding == "ich" else STROKE,
            slice_thickness_mm=config.slice_thickness_mm,
        )
    except ValueError as error:
        raise TrainingError(
            f"The training config does not make a valid model spec: {error}"
        ) from error


def check_config(config: TrainConfig) -> None:
    """Refuse settings that cannot work together, before any data is read.

    Raises:
        TrainingError: If the objective, bag sizes or early-stopping metric are invalid.
    """
    if config.objective not in OBJECTIVES:
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
    if config.layer_decay is not None and not 0.0 < config.layer_decay <= 1.0:
        raise TrainingError(f"--layer-decay must be in (0, 1], got {config.layer_decay}.")
    if config.freeze_blocks < 0:
        raise TrainingError(f"--freeze-blocks must be 0 or more, got {config.freeze_blocks}.")
    if config.architecture == HYBRID_LITE0 and not 0 <= config.backbone_cut <= 6:
        raise TrainingError(f"--backbone-cut must be 0 to 6, got {config.backbone_cut}.")
    if config.architecture == HYBRID_LITE0 and (config.cv_folds == 1 or config.cv_folds < 0):
        raise TrainingError(f"--cv-folds must be 0 or at least 2, got {config.cv_folds}.")
    if config.early_stopping_metric not in EARLY_STOPPING_METRICS:
        raise TrainingError(
            f"Unknown early-stopping metric {config.early_stopping_metric!r}; "
            "expected val_loss or val_auc."
        )
