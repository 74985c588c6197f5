"""Errors of the notification channels."""

from __future__ import annotations

from worker.errors import ErrorCode, WorkerError


class NotificationError(WorkerError):
    """A destination did not accept a notification; the outbox retries it."""

    code = ErrorCode.REFUSED
