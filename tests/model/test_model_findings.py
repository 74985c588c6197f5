"""Several findings from one model: the spec maps outputs to coded findings, one drives the
verdict, and inference gives each finding's slice and series probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from pydantic import ValidationError

from model.aggregate import aggregate
from model.checkpoint import load_checkpoint, random_spec
from model.dicom import SortedSeries
from model.inference import Classifier
from model.phantom import Lesion, write_phantom_series
from model.pixels import preprocess_hu_stack
from model.spec import INTRACRANIAL_HAEMORRHAGE, STROKE, Activation, ModelSpec
from tests.worker.helpers import EPIDURAL, SUBDURAL, multi_label_checkpoint


def _spec(**changes: Any) -> ModelSpec:
    return ModelSpec.model_validate({**random_spec().model_dump(), **changes})


def _outputs(*pairs: tuple[int, Any]) -> list[dict[str, Any]]:
    return [{"index": index, "finding": finding.model_dump()} for index, finding in pairs]


def test_an_old_spec_reports_its_positive_class_alone() -> None:
    spec = ModelSpec.from_json(random_spec().to_json())
    assert spec.activation is Activation.SOFTMAX and spec.outputs is None
    assert [(o.index, o.finding) for o in spec.reported_outputs] == [(1, STROKE)]
    assert spec.slice_thickness_mm is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"outputs": _outputs((1, STROKE), (2, EPIDURAL))}, "must be below the 2 outputs"),
        ({"outputs": _outputs((1, STROKE), (1, EPIDURAL))}, "only once"),
        ({"outputs": _outputs((1, STROKE), (0, STROKE))}, "only once"),
        ({"outputs": _outputs((0, EPIDURAL))}, "must report the positive class"),
        ({"outputs": _outputs((1, EPIDURAL))}, "must report the positive class"),
        ({"slice_thickness_mm": 0}, "greater than 0"),
    ],
)
def test_inconsistent_outputs_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _spec(**changes)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    paths = write_phantom_series(
        tmp_path_factory.mktemp("phantom"), n_slices=12, size=64, lesion=Lesion.HAEMORRHAGE
    )
    return [pydicom.dcmread(path) for path in paths]


def test_a_multi_label_model_gives_each_findings_probabilities(
    tmp_path: Path, series: list[pydicom.Dataset]
) -> None:
    loaded = load_checkpoint(multi_label_checkpoint(tmp_path / "ckpt"))
    spec = loaded.spec
    assert spec.finding == INTRACRANIAL_HAEMORRHAGE and spec.activation is Activation.SIGMOID
    prediction = Classifier(loaded, device="cpu", precision="fp32").predict_series(series)

    hu = SortedSeries(series).hu(0, len(series))
    with torch.no_grad():
        logits = loaded.network(torch.from_numpy(preprocess_hu_stack(hu, spec)))
    expected = torch.sigmoid(logits).numpy()  # sorted order is input order for the phantom
    np.testing.assert_allclose(prediction.slice_probabilities, expected[:, 0], atol=1e-6)
    assert [f.finding for f in prediction.further_findings] == [EPIDURAL, SUBDURAL]
    for column, further in enumerate(prediction.further_findings, start=1):
        np.testing.assert_allclose(further.slice_probabilities, expected[:, column], atol=1e-6)
        assert further.probability == pytest.approx(
            aggregate(expected[:, column], rule="top_k_mean", k=5), abs=1e-6
        )
    assert prediction.probability == pytest.approx(
        aggregate(expected[:, 0], rule="top_k_mean", k=5), abs=1e-6
    )
    # Sigmoid outputs are independent: they need not sum to one.
    assert not np.allclose(expected.sum(axis=1), 1.0, atol=1e-3)
