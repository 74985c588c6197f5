"""The task contract: the worker registers the task the listener sends, with the same arguments."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any
from unittest import mock

from dicom_edge import PROCESS_SERIES_TASK, ProcessSeriesArgs, process_series_kwargs
from listener.publish import JobPublisher
from worker.celery_app import create_celery_app
from worker.config import WorkerConfig, WorkerRuntime


def test_worker_registers_the_edge_task_with_its_arguments(tmp_path: Path) -> None:
    runtime = WorkerRuntime(
        storage_dir=tmp_path / "storage",
        reports_dir=tmp_path / "reports",
        database_url=f"sqlite:///{tmp_path / 'triage.db'}",
        broker_url="memory://",
    )
    app = create_celery_app(WorkerConfig(), runtime)
    task = app.tasks[PROCESS_SERIES_TASK]
    parameters = inspect.signature(task.run).parameters.values()
    keyword_only = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert keyword_only == set(ProcessSeriesArgs.__annotations__)
    assert set(process_series_kwargs(job_id=1, series_instance_uid="1.2")) == keyword_only


def test_listener_sends_the_edge_task_with_its_arguments() -> None:
    dispatcher = JobPublisher(
        sessions=mock.Mock(),
        broker_url="memory://",
        transport_options={},
        queue="tasks",
        lease_s=60.0,
    )
    sent: list[tuple[str, dict[str, Any]]] = []

    def send_task(name: str, *, kwargs: dict[str, Any], **_: Any) -> Any:
        sent.append((name, kwargs))
        return mock.Mock(id="task-1")

    try:
        with mock.patch.object(dispatcher._app, "send_task", send_task):
            assert dispatcher.send(job_id=7, series_instance_uid="1.2.3") == "task-1"
    finally:
        dispatcher.close()
    assert sent == [(PROCESS_SERIES_TASK, {"job_id": 7, "series_instance_uid": "1.2.3"})]
