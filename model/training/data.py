"""The slice data set: manifest reading, fingerprints, splits and a torch Dataset.

A data folder is laid out like the Kaggle training set: class folders of 8-bit JPEG slices that
are already brain-windowed, and a ``manifest.csv`` with ``path,label,patient,slice,sha256``.
The label belongs to the patient, so every split here that is meant to measure diagnosis keeps
a patient's slices together.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold
from torch.utils.data import Dataset

from model.errors import ModelError
from model.pixels import preprocess_windowed_uint8, resize_batch
from model.spec import ChannelMode, ModelSpec
from model.training.config import Augmentation

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("path", "label", "patient", "slice", "sha256")


class DataError(ModelError):
    """A data folder or its manifest cannot be used."""


@dataclass(frozen=True)
class SliceRecord:
    """One slice of the manifest.

    Attributes:
        path: Absolute path of the JPEG.
        label: Class name in lower case (``normal`` or ``stroke``).
        patient: Patient id made unique across classes, e.g. ``stroke/12``.
        slice: Position of the slice in the patient's series (``k`` of ``N (k).jpg``).
        sha256: Hex digest listed in the manifest.
    """

    path: Path
    label: str
    patient: str
    slice: int
    sha256: str
    slice_label: int | None = None
    """The radiologists' label of this slice (1 haemorrhage), if a slice-labels file gave one."""

    def training_label(self, positive: str = "stroke", negative: str = "normal") -> str:
        """The class this slice trains on: its own label where known, else its patient's."""
        if self.slice_label is None:
            return self.label
        return positive if self.slice_label else negative


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_records(data_dir: Path, *, verify: bool = False) -> list[SliceRecord]:
    """Reads ``manifest.csv`` of a data folder.

    Args:
        data_dir: Folder holding ``manifest.csv`` and the JPEGs it lists.
        verify: Also check every file's SHA-256 against the manifest (slow on large sets).

    Returns:
        Records sorted by patient and slice.

    Raises:
        DataError: If the manifest is missing, malformed, empty, or lists a missing or
            altered file.
    """
    manifest = Path(data_dir) / MANIFEST_NAME
    if not manifest.is_file():
        raise DataError(f"No {MANIFEST_NAME} was found in the data folder {data_dir}.")
    records: list[SliceRecord] = []
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"The manifest {manifest} lacks the columns {sorted(missing)}.")
        for line, row in enumerate(reader, start=2):
            label = row["label"].strip().lower()
            path = (manifest.parent / row["path"]).resolve()
            try:
                slice_number = int(row["slice"])
            except ValueError as error:
                raise DataError(f"Line {line} of {manifest} has a non-integer slice.") from error
            if not path.is_file():
                raise DataError(f"Line {line} of {manifest} lists a missing file: {path}.")
            sha256 = row["sha256"].strip().lower()
            if verify and _sha256(path) != sha256:
                raise DataError(f"The file {path} does not match its SHA-256 in the manifest.")
            records.append(
                SliceRecord(
                    path=path,
                    label=label,
                    patient=f"{label}/{row['patient'].strip()}",
                    slice=slice_number,
                    sha256=sha256,
                )
            )
    if not records:
        raise DataError(f"The manifest {manifest} lists no slices.")
    records.sort(key=lambda record: (record.patient, record.slice))
    logger.info(
        "Read %s slices of %s patients from %s",
        len(records),
        len({r.patient for r in records}),
        manifest,
    )
    return records


def fingerprint(records: Sequence[SliceRecord]) -> str:
    """SHA-256 over the sorted per-file digests: identifies the exact set of slices."""
    digest = hashlib.sha256()
    for sha in sorted(record.sha256 for record in records):
        digest.update(sha.encode("ascii"))
        digest.update(b"\n")
    return digest.hexdigest()


def label_index(records: Sequence[SliceRecord], class_names: Sequence[str]) -> list[int]:
    """The class index of each record, by its label's position in ``class_names``.

    Raises:
        DataError: If a label is not one of ``class_names``.
    """
    lookup = {name.lower(): i for i, name in enumerate(class_names)}
    labels = [r.training_label() for r in records]
    unknown = set(labels) - set(lookup)
    if unknown:
        raise DataError(f"The labels {sorted(unknown)} are not among {list(class_names)}.")
    return [lookup[label] for label in labels]


def group_by_patient(records: Sequence[SliceRecord]) -> dict[str, list[int]]:
    """Indices of each patient's records, ordered by slice number."""
    groups: dict[str, list[int]] = {}
    for i in sorted(range(len(records)), key=lambda j: (records[j].patient, records[j].slice)):
        groups.setdefault(records[i].patient, []).append(i)
    return groups


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


def patient_group_kfold(
    records: Sequence[SliceRecord], n_splits: int = 5, seed: int = 0
) -> list[tuple[list[int], list[int]]]:
    """Patient-grouped, label-stratified K-fold split.

    Returns:
        ``n_splits`` pairs of (train indices, test indices) into ``records``; no patient is
        in both parts of a pair, and every patient is in exactly one test part.
    """
    patients = sorted({r.patient for r in records})
    if len(patients) < n_splits:
        raise DataError(f"{n_splits} folds need at least {n_splits} patients, not {len(patients)}.")
    labels = [r.label for r in records]
    groups = [r.patient for r in records]
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [
        (sorted(int(i) for i in train), sorted(int(i) for i in test))
        for train, test in splitter.split(np.zeros(len(records)), labels, groups)
    ]


def patient_holdout(
    records: Sequence[SliceRecord], fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Splits off about ``fraction`` of the patients (stratified by label) for validation.

    Returns:
        (kept indices, held-out indices).
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"The validation fraction must lie in (0, 1), got {fraction}.")
    n_patients = len({r.patient for r in records})
    n_splits = min(max(2, round(1.0 / fraction)), n_patients)
    return patient_group_kfold(records, n_splits=n_splits, seed=seed)[0]


def random_slice_split(
    records: Sequence[SliceRecord],
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> tuple[list[int], list[int], list[int]]:
    """The paper's split: slices shuffled at random into train, validation and test.

    Shuffled within each label so that every part keeps the class ratio. This leaks patients
    across the parts (adjacent slices are near-duplicates) and is kept only to reproduce the
    paper's protocol.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1):
        raise DataError(f"The split fractions must be three non-negative shares of 1: {fractions}.")
    rng = random.Random(seed)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for label in sorted({r.label for r in records}):
        order = [i for i, r in enumerate(records) if r.label == label]
        rng.shuffle(order)
        n_train = round(fractions[0] * len(order))
        n_val = round(fractions[1] * len(order))
        parts[0].extend(order[:n_train])
        parts[1].extend(order[n_train : n_train + n_val])
        parts[2].extend(order[n_train + n_val :])
    return sorted(parts[0]), sorted(parts[1]), sorted(parts[2])


_DECODED: dict[tuple[Path, int], npt.NDArray[np.float32]] = {}
"""Decoded, resized slices of this process, so that folds and reruns decode each file once."""

_DECODED_LIMIT = 20_000


def decode_slice(path: Path, size: int) -> npt.NDArray[np.float32]:
    """Decodes one JPEG slice to grey (float32 on the 0-255 scale), downsized to ``size`` px.

    Uses the inference resizer (``resize_batch``), so that training and inference see the same
    interpolation, and keeps its floats: rounding back to 8 bits moved probabilities by up to
    0.03 from what the service computes on the same pixels as DICOM (issue 22's parity).
    Results are kept per process (keyed by path and size), as cross-validation decodes every
    file once per fold otherwise.
    """
    key = (Path(path), size)
    cached = _DECODED.get(key)
    if cached is None:
        cached = _decode_uncached(Path(path), size)
        if len(_DECODED) < _DECODED_LIMIT:
            _DECODED[key] = cached
    return cached.copy()


def _decode_uncached(path: Path, size: int) -> npt.NDArray[np.float32]:
    with Image.open(path) as image:
        gray = np.asarray(image.convert("L"), dtype=np.float32)
    if gray.shape == (size, size):
        return gray.copy()
    result: npt.NDArray[np.float32] = resize_batch(gray[None, None], size)[0, 0]
    return result


class SliceDataset(Dataset[tuple[torch.Tensor, int]]):
    """JPEG slices as network inputs ``(3, S, S)`` with their class index.

    Decoded images are downsized to the spec's input size once and kept in memory. Adjacent-slice
    channels take neighbours by rank within the patient's slices sorted by slice number (never
    the number itself). ``shuffle_slice_order`` is the control for the numbering shortcut: it
    replaces the anatomical order by a random one within each patient.

    Augmentation is seeded by (seed, epoch, index), so an epoch's inputs do not depend on the
    global random state; call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        records: Sequence[SliceRecord],
        spec: ModelSpec,
        *,
        augmentation: Augmentation = Augmentation.NONE,
        shuffle_slice_order: bool = False,
        seed: int = 0,
    ) -> None:
        self.records = list(records)
        self.spec = spec
        self.augmentation = Augmentation(augmentation)
        self.seed = seed
        self.epoch = 0
        self.labels = label_index(self.records, spec.class_names)
        self._inputs: dict[int, torch.Tensor] = {}
        """Network inputs kept per index when there is no augmentation (they never change)."""
        size = spec.input_size
        self._images = np.stack([decode_slice(r.path, size) for r in self.records])
        self._neighbours: list[tuple[int, int, int]] = [(i, i, i) for i in range(len(records))]
        order_rng = random.Random(seed)
        for members in group_by_patient(self.records).values():
            if shuffle_slice_order:
                order_rng.shuffle(members)
            for rank, i in enumerate(members):
                previous = members[max(rank - 1, 0)]
                following = members[min(rank + 1, len(members) - 1)]
                self._neighbours[i] = (previous, i, following)
        logger.debug("Cached %s slices at %s px", len(self.records), size)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch that seeds this epoch's augmentation."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        kept = self._inputs.get(index)
        if kept is not None:
            return kept, self.labels[index]
        adjacent = ChannelMode(self.spec.channel_mode) is ChannelMode.ADJACENT
        stack = self._images[list(self._neighbours[index]) if adjacent else [index]]
        if self.augmentation is not Augmentation.NONE:
            generator = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index
            )
            stack = _augment(stack, self.augmentation, generator)
        channels = preprocess_windowed_uint8(stack, self.spec)
        # An adjacent stack is (previous, this, next): its middle item carries this slice's input.
        item = torch.from_numpy(np.ascontiguousarray(channels[len(stack) // 2]))
        if self.augmentation is Augmentation.NONE:
            self._inputs[index] = item
        return item, self.labels[index]


def _augment(
    stack: npt.NDArray[np.float32], level: Augmentation, generator: torch.Generator
) -> npt.NDArray[np.float32]:
    """One random flip, affine and (``full``) intensity jitter, the same for every item."""
    images = torch.from_numpy(stack).float().unsqueeze(1)  # (K, 1, H, W)
    wide = level is Augmentation.FULL
    draws = torch.rand(6, generator=generator)
    max_degrees, max_shift, max_zoom = (15.0, 0.08, 0.12) if wide else (8.0, 0.04, 0.06)
    angle = math.radians((draws[0].item() * 2 - 1) * max_degrees)
    shift_x = (draws[1].item() * 2 - 1) * max_shift * 2
    shift_y = (draws[2].item() * 2 - 1) * max_shift * 2
    zoom = 1.0 + (draws[3].item() * 2 - 1) * max_zoom
    flip = -1.0 if draws[4].item() < 0.5 else 1.0
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    theta = torch.tensor(
        [[cos * flip, -sin, shift_x], [sin * flip, cos, shift_y]], dtype=torch.float32
    ).expand(images.shape[0], 2, 3)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    images = torch.nn.functional.grid_sample(
        images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    if wide:
        contrast = 1.0 + (draws[5].item() * 2 - 1) * 0.15
        brightness = (torch.rand(1, generator=generator).item() * 2 - 1) * 12.0
        images = images * contrast + brightness
    result: npt.NDArray[np.float32] = images.squeeze(1).clamp(0, 255).numpy()
    return result


def write_synthetic_dataset(
    directory: Path,
    *,
    patients_per_class: int = 3,
    slices_per_patient: int = 4,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Writes a tiny data folder laid out like the training set, for tests and demos.

    Every slice is a grey disc with noise; each slice of a ``Stroke`` patient also holds a bright
    blob, so the classes are easy to tell apart.

    Returns:
        ``directory``, holding ``Normal/``, ``Stroke/`` and ``manifest.csv``.
    """
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2.0
    disc = (yy - centre) ** 2 + (xx - centre) ** 2 <= (0.4 * size) ** 2
    rows: list[dict[str, str]] = []
    for label in ("Normal", "Stroke"):
        (directory / label).mkdir(parents=True, exist_ok=True)
        for patient in range(1, patients_per_class + 1):
            for k in range(1, slices_per_patient + 1):
                image = np.where(disc, 90.0, 0.0) + rng.normal(0.0, 8.0, (size, size))
                if label == "Stroke":
                    cy, cx = rng.uniform(0.35 * size, 0.65 * size, 2)
                    blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= (0.12 * size) ** 2
                    image[blob] = 230.0
                relative = f"{label}/{patient} ({k}).jpg"
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                    directory / relative, quality=95
                )
                rows.append(
                    {
                        "path": relative,
                        "label": label,
                        "patient": str(patient),
                        "slice": str(k),
                        "sha256": _sha256(directory / relative),
                    }
                )
    with (directory / MANIFEST_NAME).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return directory
