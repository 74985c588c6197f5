"""One device and precision picker for serving and training (model.device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import device as model_device
from model.device import autocast, bf16_agrees, resolve_precision
from model.errors import ModelError, PrecisionError

CPU = torch.device("cpu")


def test_explicit_precisions_pass_through() -> None:
    for vetted in (True, False):
        assert resolve_precision("fp32", CPU, bf16_vetted=vetted) == "fp32"
        assert resolve_precision("bf16", CPU, bf16_vetted=vetted) == "bf16"


@pytest.mark.parametrize(
    ("native", "vetted", "expected"),
    [(True, True, "bf16"), (True, False, "fp32"), (False, True, "fp32"), (False, False, "fp32")],
)
def test_auto_on_cpu_needs_native_bf16_and_a_vetted_model(
    monkeypatch: pytest.MonkeyPatch, native: bool, vetted: bool, expected: str
) -> None:
    monkeypatch.setattr(model_device, "cpu_supports_bf16", lambda: native)
    assert resolve_precision("auto", CPU, bf16_vetted=vetted) == expected


def test_unknown_precision_is_a_model_error_and_a_value_error() -> None:
    with pytest.raises(PrecisionError, match="Unknown precision") as caught:
        resolve_precision("fp16", CPU, bf16_vetted=True)
    assert isinstance(caught.value, ModelError) and isinstance(caught.value, ValueError)


def test_autocast_runs_bf16_only_when_asked() -> None:
    a, b = torch.ones(2, 2), torch.ones(2, 2)
    with autocast(CPU, "fp32"):
        assert (a @ b).dtype == torch.float32
    with autocast(CPU, "bf16"):
        assert (a @ b).dtype == torch.bfloat16


def test_bf16_is_vetted_only_with_the_same_verdicts_and_close_probabilities() -> None:
    fp32 = np.array([0.02, 0.30, 0.90])
    assert bf16_agrees(fp32, fp32 + 0.005, threshold=0.5)
    # The same verdicts, but a series moved by 0.2: only luck kept it off the threshold.
    assert not bf16_agrees(fp32, np.array([0.02, 0.10, 0.90]), threshold=0.5)
    assert not bf16_agrees(fp32, np.array([0.02, 0.51, 0.90]), threshold=0.5)
