"""The model spec: everything inference needs to know, stored beside the weights."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION = 1
"""The newest spec format this code reads and writes."""


@dataclass(frozen=True)
class Window:
    """A CT display window in Hounsfield units."""

    center: float
    width: float


WINDOW_PRESETS: dict[str, Window] = {
    "brain": Window(center=40.0, width=80.0),
    "stroke": Window(center=40.0, width=40.0),
    "stroke_narrow": Window(center=32.0, width=8.0),
    "subdural": Window(center=80.0, width=200.0),
    "bone": Window(center=600.0, width=2800.0),
}


class ChannelMode(StrEnum):
    """How the three input channels of the network are filled."""

    REPLICATE = "replicate"
    """One window, copied into all three channels."""
    MULTI_WINDOW = "multi_window"
    """Three windows of the same slice, one per channel."""
    ADJACENT = "adjacent"
    """Slices k-1, k, k+1 of the sorted stack under one window; edges repeat the edge slice."""
    MIRROR = "mirror"
    """One window, aligned on the midline: the slice, its mirror image, their difference.

    The slice is first resized to the input size, then aligned (``model.symmetry``)."""


class WindowSpec(BaseModel):
    """A named CT window in HU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    center: float
    width: float = Field(gt=0)


class AggregationSpec(BaseModel):
    """How slice probabilities become one series probability."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: Literal["top_k_mean", "mean", "max"]
    k: int = Field(default=5, ge=1)


class ProbabilityDistribution(BaseModel):
    """A histogram of series probabilities: the reference that live drift is measured against."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    edges: list[float] = Field(min_length=2)
    """Bin edges, ascending, from 0 to 1."""
    fractions: list[float]
    """Share of series in each bin (one fewer than ``edges``)."""
    count: int = Field(ge=0)
    """Series the histogram was made from."""
    source: str = ""
    """Where it was measured, e.g. ``validate`` on a data fingerprint."""

    @model_validator(mode="after")
    def _check_bins(self) -> ProbabilityDistribution:
        if len(self.fractions) != len(self.edges) - 1:
            raise ValueError("A distribution needs one fraction per bin (len(edges) - 1).")
        return self


class SiteCalibration(BaseModel):
    """How the threshold was chosen on a site's own labelled series (``calibrate``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_sensitivity: float = Field(gt=0.0, le=1.0)
    threshold: float = Field(ge=0.0, le=1.0)
    previous_threshold: float = Field(ge=0.0, le=1.0)
    sensitivity: float
    sensitivity_ci: tuple[float, float]
    specificity: float
    specificity_ci: tuple[float, float]
    positives: int = Field(ge=0)
    negatives: int = Field(ge=0)
    data_fingerprint: str
    """sha256 of the sorted (Series Instance UID, label) pairs the threshold was chosen on."""
    calibrated_at: str
    """ISO 8601 date and time."""
    source_sha256: str
    """sha256 of the weights (unchanged by calibration)."""


class ImportedWeights(BaseModel):
    """Provenance of weights made elsewhere and imported (``stroke-triage import-model``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_format: Literal["huggingface", "timm"]
    file_name: str
    """The weights file's name, without the importing machine's folders."""
    sha256: str
    """SHA-256 of that file, as it was read."""
    source_architecture: str
    """The source's own name for its class (``ViTForImageClassification``, a timm name)."""
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    """The source's image processor settings the spec's input size, mean and std came from."""
    imported_at: str | None = None
    """ISO 8601 date and time."""


class CodedFinding(BaseModel):
    """What a model detects, as a coded concept (the SR's finding, the alerts' words)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheme: str = Field(min_length=1)
    """Coding scheme designator, e.g. ``SCT`` (SNOMED CT)."""
    value: str = Field(min_length=1)
    """Code value in that scheme."""
    meaning: str = Field(min_length=1)
    """Code meaning, as the scheme words it."""
    short_name: str = Field(min_length=1, max_length=16)
    """A short name for titles and series descriptions, e.g. ``ICH`` or ``stroke``."""


INTRACRANIAL_HAEMORRHAGE = CodedFinding(
    scheme="SCT", value="1386000", meaning="Intracranial hemorrhage", short_name="ICH"
)
"""SNOMED CT 1386000: what a model trained on CT-ICH detects."""

STROKE = CodedFinding(
    scheme="SCT",
    value="230690007",
    meaning="Cerebrovascular accident or stroke",
    short_name="stroke",
)
"""SNOMED CT 230690007: the finding of checkpoints made before the spec named one."""


class ModelSpec(BaseModel):
    """Architecture, preprocessing, decision rule and provenance of one checkpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str
    input_size: int = Field(gt=0)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    windows: list[WindowSpec] = Field(min_length=1)
    channel_mode: ChannelMode
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str] = Field(default_factory=lambda: ["normal", "stroke"], min_length=2)
    positive_class: str = "stroke"
    aggregation: AggregationSpec
    threshold: float = Field(ge=0.0, le=1.0)
    trained: bool
    data_fingerprint: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    version: str
    name: str = "stroke-triage-vit"
    created_at: str | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    calibration: SiteCalibration | None = None
    """Set by ``calibrate``: the site threshold and what it achieved; None if never calibrated."""
    reference_distribution: ProbabilityDistribution | None = None
    """Series probabilities on validation data, for drift (PSI) once live; None if unknown."""
    layer_norm_eps: float | None = Field(default=None, gt=0.0)
    """Epsilon of every LayerNorm; None keeps timm's (1e-6). Hugging Face ViTs use 1e-12."""
    threshold_calibrated: bool = True
    """False when the threshold was set by hand (``import-model``), not chosen on labelled
    series; such a checkpoint must be calibrated on the site's own data before clinical use."""
    source: ImportedWeights | None = None
    """Where imported weights came from (``import-model``); None for weights trained here."""
    finding: CodedFinding = STROKE
    """What the model detects; checkpoints written before this field existed said "stroke"."""
    slice_thickness_mm: float | None = Field(default=None, gt=0)
    """Slice thickness of the training data in mm; a thinner stack is averaged into slabs of it."""
    format_version: int = FORMAT_VERSION

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelSpec:
        expected = 3 if self.channel_mode is ChannelMode.MULTI_WINDOW else 1
        if len(self.windows) != expected:
            raise ValueError(
                f"Channel mode {self.channel_mode.value!r} needs exactly {expected} window(s), "
                f"got {len(self.windows)}."
            )
        if self.positive_class not in self.class_names:
            raise ValueError(
                f"The positive class {self.positive_class!r} is not one of {self.class_names}."
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"Class names must be unique, got {self.class_names}.")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"Every std must be positive, got {self.std}.")
        if self.format_version > FORMAT_VERSION:
            raise ValueError(
                f"Spec format {self.format_version} is newer than this code reads "
                f"({FORMAT_VERSION}); upgrade stroke-triage."
            )
        return self

    @property
    def positive_index(self) -> int:
        """Index of the positive class in the network output."""
        return self.class_names.index(self.positive_class)

    def window_objects(self) -> list[Window]:
        """The windows as ``Window`` objects, in channel order."""
        return [Window(center=w.center, width=w.width) for w in self.windows]

    def to_json(self) -> str:
        """Serialise to indented JSON."""
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelSpec:
        """Parse and validate JSON written by ``to_json``."""
        return cls.model_validate_json(text)
