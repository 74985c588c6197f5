"""The task contract: the worker registers the task the listener sends, with the same arguments."""

from __future__ import annotations

import inspect
import uuid
from pathlib import Path

from kombu import Connection

from db.engine import create_engine_for, make_session_factory
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


def test_listener_sends_the_edge_task_with_its_arguments(redis_url: str) -> None:
    """What the listener puts on the real broker is the task the worker registers, by name and
    keyword arguments, under the id it reports."""
    queue = f"tasks-contract-{uuid.uuid4().hex}"
    dispatcher = JobPublisher(
        sessions=make_session_factory(create_engine_for("sqlite://")),
        broker_url=redis_url,
        transport_options={},
        queue=queue,
        lease_s=60.0,
    )
    try:
        task_id = dispatcher.send(job_id=7, series_instance_uid="1.2.3")
    finally:
        dispatcher.close()
    with Connection(redis_url) as connection:
        inbox = connection.SimpleQueue(queue)
        try:
            message = inbox.get(timeout=5)
            message.ack()
            args, kwargs, _ = message.decode()
            headers = message.headers
        finally:
            inbox.queue.delete()
            inbox.close()
    assert headers["task"] == PROCESS_SERIES_TASK and headers["id"] == task_id
    assert args == [] and kwargs == {"job_id": 7, "series_instance_uid": "1.2.3"}
