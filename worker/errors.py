"""Exceptions raised by the worker package.

Every error the worker raises derives from :class:`WorkerError`, so that the Celery task can
decide in one place which failures are retried and which are final.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base class of all errors raised by the worker package."""


class ReportError(WorkerError):
    """A DICOM output (Structured Report or Secondary Capture) could not be built or read."""


class ExportError(WorkerError):
    """Sending DICOM objects to the destination failed.

    Connection failures, aborts, rejected associations, timeouts and non-success C-STORE
    statuses all raise this error; they are usually transient, so callers may retry.

    Attributes:
        status: The DICOM status returned by the peer, or None when no status was received.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
