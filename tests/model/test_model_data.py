"""The slice data set: manifest, fingerprint, splits, neighbours and augmentation."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model.spec import AggregationSpec, ChannelMode, ModelSpec, WindowSpec
from model.training.config import Augmentation
from model.training.data import (
    DataError,
    SliceDataset,
    decode_slice,
    fingerprint,
    load_records,
    patient_group_kfold,
    patient_holdout,
    random_slice_split,
    write_synthetic_dataset,
)
from tests.helpers import require_peer


def _spec(mode: ChannelMode = ChannelMode.REPLICATE, size: int = 32) -> ModelSpec:
    return ModelSpec(
        architecture="vit_tiny_patch16_224",
        input_size=size,
        model_kwargs={"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 8},
        windows=[WindowSpec(name="brain", center=40, width=80)],
        channel_mode=mode,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        aggregation=AggregationSpec(rule="top_k_mean", k=5),
        threshold=0.5,
        trained=False,
        version="test",
    )


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("toy"), patients_per_class=5, slices_per_patient=4, size=48
    )


def test_records_are_prefixed_sorted_and_labelled(toy: Path) -> None:
    records = load_records(toy, verify=True)
    assert len(records) == 40
    assert {r.label for r in records} == {"normal", "stroke"}
    # Patient "1" exists in both classes: the prefix keeps them apart.
    assert {"normal/1", "stroke/1"} <= {r.patient for r in records}
    assert len({r.patient for r in records}) == 10
    keys = [(r.patient, r.slice) for r in records]
    assert keys == sorted(keys)


def test_missing_manifest_and_altered_file_are_refused(toy: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"No manifest\.csv"):
        load_records(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(toy, copy)
    target = copy / "Stroke" / "1 (1).jpg"
    target.write_bytes(target.read_bytes() + b"\0")
    load_records(copy)  # not verified: accepted
    with pytest.raises(DataError, match="SHA-256"):
        load_records(copy, verify=True)


def test_empty_manifest_is_refused(tmp_path: Path) -> None:
    with (tmp_path / "manifest.csv").open("w", newline="") as handle:
        csv.writer(handle).writerow(["path", "label", "patient", "slice", "sha256"])
    with pytest.raises(DataError, match="lists no slices"):
        load_records(tmp_path)


def test_fingerprint_ignores_order_and_sees_content(toy: Path) -> None:
    records = load_records(toy)
    assert fingerprint(records) == fingerprint(list(reversed(records)))
    assert fingerprint(records) != fingerprint(records[1:])


def test_grouped_folds_never_share_a_patient(toy: Path) -> None:
    records = load_records(toy)
    folds = patient_group_kfold(records, n_splits=5, seed=3)
    tested: list[str] = []
    for train, test in folds:
        train_patients = {records[i].patient for i in train}
        test_patients = {records[i].patient for i in test}
        assert not train_patients & test_patients
        assert len(train) + len(test) == len(records)
        assert {records[i].label for i in test} == {"normal", "stroke"}
        tested.extend(test_patients)
    assert sorted(tested) == sorted({r.patient for r in records})
    keep, held = patient_holdout(records, 0.2, seed=0)
    assert not {records[i].patient for i in keep} & {records[i].patient for i in held}


def test_random_slice_split_is_the_leaky_protocol(toy: Path) -> None:
    records = load_records(toy)
    train, val, test = random_slice_split(records, (0.8, 0.1, 0.1), seed=0)
    assert (len(train), len(val), len(test)) == (32, 4, 4)
    assert sorted(train + val + test) == list(range(len(records)))
    assert random_slice_split(records, seed=0) == (train, val, test)
    # Slices of the same patients end up on both sides.
    assert {records[i].patient for i in test} & {records[i].patient for i in train}


def test_dataset_items_are_normalised_three_channel_images(toy: Path) -> None:
    records = load_records(toy)
    dataset = SliceDataset(records, _spec())
    image, label = dataset[0]
    assert image.shape == (3, 32, 32)
    assert image.dtype == torch.float32
    assert torch.isfinite(image).all()
    assert label == 0
    assert dataset[len(dataset) - 1][1] == 1


def test_adjacent_neighbours_are_taken_by_rank_not_slice_number(toy: Path, tmp_path: Path) -> None:
    copy = tmp_path / "gaps"
    shutil.copytree(toy, copy)
    manifest = copy / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    # Renumber patient stroke/1 with a gap (1, 2, 4, 5): neighbours must still be by rank.
    renumber = {"1": "1", "2": "2", "3": "4", "4": "5"}
    for row in rows:
        if row["label"] == "Stroke" and row["patient"] == "1":
            row["slice"] = renumber[row["slice"]]
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    records = load_records(copy)
    dataset = SliceDataset(records, _spec(ChannelMode.ADJACENT))
    members = [i for i, r in enumerate(records) if r.patient == "stroke/1"]
    assert [records[i].slice for i in members] == [1, 2, 4, 5]
    middles = [dataset[i][0][1] for i in members]
    for rank, i in enumerate(members):
        image = dataset[i][0]
        assert torch.equal(image[0], middles[max(rank - 1, 0)])
        assert torch.equal(image[2], middles[min(rank + 1, len(members) - 1)])
    shuffled = SliceDataset(records, _spec(ChannelMode.ADJACENT), shuffle_slice_order=True, seed=1)
    assert all(torch.equal(shuffled[i][0][1], middles[n]) for n, i in enumerate(members))
    assert any(not torch.equal(shuffled[i][0], dataset[i][0]) for i in range(len(records))), (
        "the control must change some neighbours"
    )


def test_augmentation_is_seeded_by_epoch_and_index(toy: Path) -> None:
    records = load_records(toy)
    plain = SliceDataset(records, _spec())
    augmented = SliceDataset(records, _spec(), augmentation=Augmentation.FULL, seed=7)
    augmented.set_epoch(1)
    first = augmented[3][0]
    assert torch.equal(first, augmented[3][0])
    assert not torch.equal(first, plain[3][0])
    augmented.set_epoch(2)
    assert not torch.equal(first, augmented[3][0])
    assert torch.isfinite(first).all()


def test_shared_training_set_manifest(shared_data: Path) -> None:
    folder = shared_data / "brain-stroke-ct"
    if not (folder / "manifest.csv").is_file():
        require_peer("the Kaggle training set", f"its manifest.csv is not in {folder}.")
    records = load_records(folder)
    assert len(records) == 2095
    patients = {r.patient for r in records}
    assert len(patients) == 69
    assert sum(p.startswith("stroke/") for p in patients) == 26
    assert len(fingerprint(records)) == 64
    folds = patient_group_kfold(records, n_splits=5, seed=0)
    counts = np.array([len({records[i].patient for i in test}) for _, test in folds])
    assert counts.sum() == 69


def test_decoded_slices_are_cached_per_path_and_size_and_returned_as_copies(toy: Path) -> None:
    record = load_records(toy)[0]
    first = decode_slice(record.path, 24)
    assert first.shape == (24, 24)
    assert first.dtype == np.float32  # resized in float, never rounded back to 8 bits
    first[:] = 0
    again = decode_slice(record.path, 24)
    assert again.any(), "changing a returned image must not change the cache"
    assert decode_slice(record.path, 16).shape == (16, 16)
