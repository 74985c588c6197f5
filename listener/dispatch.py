"""Hands completed series to the workers by task name only (the listener never imports them)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from listener.errors import DispatchError
from stroke_triage.edge import PROCESS_SERIES_TASK, process_series_kwargs

log = logging.getLogger(__name__)


class TaskDispatcher:
    """Publishes ``process_series`` tasks to the broker."""

    def __init__(
        self,
        *,
        broker_url: str,
        transport_options: dict[str, Any],
        queue: str,
        connect_timeout_s: float = 3.0,
    ) -> None:
        self._queue = queue
        self._app = Celery("stroke-triage-listener", broker=broker_url, set_as_current=False)
        self._app.conf.update(
            broker_transport_options=transport_options,
            broker_connection_timeout=connect_timeout_s,
            broker_connection_retry_on_startup=False,
            task_ignore_result=True,
        )

    def send(self, *, job_id: int, series_instance_uid: str) -> str:
        """Publish one task and return its id; raise DispatchError if the broker is down."""
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

    def close(self) -> None:
        """Release broker connections."""
        self._app.close()
