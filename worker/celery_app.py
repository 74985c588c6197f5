"""The worker's Celery application, built from settings (never at import time)."""

from __future__ import annotations

from celery import Celery
from kombu.entity import Queue

from worker.config import WorkerConfig, WorkerRuntime
from worker.context import WorkerContext
from worker.tasks import register_tasks


def create_celery_app(config: WorkerConfig, runtime: WorkerRuntime) -> Celery:
    """A Celery app with our queue, safety settings and tasks, bound to one worker context."""
    app = Celery("stroke-triage", broker=runtime.broker_url, set_as_current=False)
    app.conf.update(
        broker_transport_options=runtime.broker_transport_options,
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(runtime.task_queue)],  # type: ignore[no-untyped-call]
        task_default_queue=runtime.task_queue,
        task_ignore_result=True,
        # The work is idempotent, so a task is acknowledged only once it is done and is
        # given to another worker if this one dies mid-way.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    register_tasks(app, WorkerContext(config=config, runtime=runtime))
    return app
