"""Worker warm-up: the one-time work of the first series is done at start (issue 16)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from model.checkpoint import create_random_checkpoint
from model.inference import Classifier
from worker.config import WorkerConfig, WorkerRuntime
from worker.context import WorkerContext
from worker.warm_up import warm_up


@pytest.fixture
def ctx(tmp_path: Path) -> WorkerContext:
    checkpoint = create_random_checkpoint(tmp_path / "tiny", seed=0)
    runtime = WorkerRuntime(
        storage_dir=tmp_path / "storage",
        reports_dir=tmp_path / "reports",
        database_url=f"sqlite:///{tmp_path / 'triage.db'}",
        broker_url="memory://",
    )
    return WorkerContext(config=WorkerConfig(checkpoint=checkpoint, batch_size=4), runtime=runtime)


def test_warm_up_loads_the_model_runs_a_forward_pass_and_loads_highdicom_tables(
    ctx: WorkerContext,
) -> None:
    from highdicom._standard_utils import get_module_attribute_map

    get_module_attribute_map.cache_clear()
    assert not ctx.model_loaded
    with mock.patch.object(Classifier, "predict_probabilities", autospec=True) as forward:
        warm_up(ctx)
    assert ctx.model_loaded
    (call,) = forward.call_args_list
    size = ctx.classifier.spec.input_size
    assert call.args[1].shape == (4, 3, size, size)
    assert get_module_attribute_map.cache_info().currsize == 1


def test_warm_up_forward_pass_runs_for_real(ctx: WorkerContext) -> None:
    warm_up(ctx)  # no mock: the blank batch goes through the network without error
    assert ctx.model_loaded
