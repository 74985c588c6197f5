"""The one way a job reaches the workers: its task published by name, then the job marked queued.

The listener's completion monitor and reconciler, the CLI's ``requeue`` and the console's
re-queue all publish through :class:`JobPublisher`. The task is sent by name only
(:data:`dicom_edge.PROCESS_SERIES_TASK`), so nothing here imports the worker.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from celery import Celery

import db.jobs
from compat.folder_queue import transport_for
from db.engine import SessionFactory
from dicom_edge import PROCESS_SERIES_TASK, process_series_kwargs
from listener.errors import DispatchError

log = logging.getLogger(__name__)


class JobPublisher:
    """Publishes ``process_series`` tasks to the broker and records each job as queued."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        broker_url: str,
        transport_options: dict[str, Any],
        queue: str,
        lease_s: float,
        connect_timeout_s: float = 3.0,
    ) -> None:
        """Create a publisher.

        Args:
            sessions: Database sessions (the job is marked queued in the outbox).
            broker_url: The Celery broker.
            transport_options: kombu transport options of that broker.
            queue: The queue series are sent to for inference.
            lease_s: How long a job may wait on the broker before it counts as lost.
            connect_timeout_s: How long to wait for the broker before giving up.
        """
        self._sessions = sessions
        self._queue = queue
        self._lease_s = lease_s
        self._app = Celery("stroke-triage-publisher", broker=broker_url, set_as_current=False)
        self._app.conf.update(
            broker_transport=transport_for(broker_url),  # the folder queue's, made safe
            broker_transport_options=dict(transport_options),
            broker_connection_timeout=connect_timeout_s,
            broker_connection_retry_on_startup=False,
            task_ignore_result=True,
        )

    def send(self, *, job_id: int, series_instance_uid: str) -> str:
        """Send the task only, and return its id (the job's row is not touched).

        Raises:
            DispatchError: The broker did not take it.
        """
        try:
            result = self._app.send_task(
                PROCESS_SERIES_TASK,
                kwargs=process_series_kwargs(
                    job_id=job_id, series_instance_uid=series_instance_uid
                ),
                queue=self._queue,
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5},
            )
        except Exception as exc:  # kombu raises several unrelated types for a dead broker
            raise DispatchError(
                f"The broker did not take job {job_id}; it stays in the outbox: {exc}"
            ) from exc
        return str(result.id)

    def publish(self, *, job_id: int, series_instance_uid: str) -> str:
        """Publish a job from the outbox (or a lost job) and record it as queued.

        Returns:
            The id of the published task.

        Raises:
            DispatchError: The broker did not take it; the job stays in the outbox.
        """
        task_id = self.send(job_id=job_id, series_instance_uid=series_instance_uid)
        with self._sessions() as session:
            db.jobs.mark_job_queued(
                session=session, job_id=job_id, task_id=task_id, lease_s=self._lease_s
            )
            session.commit()
        log.info("Job %d for series %s queued as task %s", job_id, series_instance_uid, task_id)
        return task_id

    def close(self) -> None:
        """Release broker connections."""
        self._app.close()

    def __enter__(self) -> JobPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
