"""The dedicated GPU queue: who consumes it (CUDA is mocked; the tests have no GPU)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
from celery import signals

from worker.celery_app import create_celery_app
from worker.config import WorkerConfig, WorkerRuntime
from worker.routing import inference_queue, worker_queues


@pytest.mark.parametrize(
    ("gpu_queue", "device", "cuda", "expected"),
    [
        (None, "auto", True, ["tasks"]),
        ("gpu", "auto", True, ["tasks", "gpu"]),
        ("gpu", "cuda", True, ["tasks", "gpu"]),
        ("gpu", "auto", False, ["tasks"]),
        ("gpu", "cpu", True, ["tasks"]),
    ],
)
def test_only_workers_with_cuda_consume_the_gpu_queue(
    gpu_queue: str | None, device: str, cuda: bool, expected: list[str]
) -> None:
    config = WorkerConfig.model_validate({"gpu_queue": gpu_queue, "device": device})
    assert worker_queues(config, "tasks", cuda=cuda) == expected


def test_series_go_to_the_gpu_queue_when_one_is_set() -> None:
    assert inference_queue(WorkerConfig(), "tasks") == "tasks"
    assert inference_queue(WorkerConfig(gpu_queue="gpu"), "tasks") == "gpu"


@pytest.mark.parametrize(("cuda", "consumed"), [(True, {"tasks", "gpu"}), (False, {"tasks"})])
def test_worker_start_adds_the_gpu_queue_where_cuda_is(
    tmp_path: Path, cuda: bool, consumed: set[str]
) -> None:
    runtime = WorkerRuntime(
        storage_dir=tmp_path,
        reports_dir=tmp_path,
        database_url="sqlite://",
        broker_url="memory://",
        task_queue="tasks",
    )
    app = create_celery_app(WorkerConfig(gpu_queue="gpu"), runtime)
    app.amqp.queues.select(["tasks"])  # what `celery worker --queues=tasks` does
    worker = SimpleNamespace(app=app, pool_cls=object)
    with mock.patch("torch.cuda.is_available", return_value=cuda):
        signals.celeryd_after_setup.send(sender="node@test", instance=worker, conf=app.conf)
    assert set(app.amqp.queues.consume_from) == consumed
