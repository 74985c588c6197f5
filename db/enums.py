"""String-valued states and kinds stored in the database."""

from enum import StrEnum


class SeriesStatus(StrEnum):
    """Where a received series stands."""

    RECEIVING = "receiving"
    """Instances are arriving; the quiet period has not yet passed."""
    COMPLETE = "complete"
    """Judged complete; a job waits in the outbox."""
    SKIPPED = "skipped"
    """Not eligible for inference (wrong modality, too few slices, ...)."""
    QUEUED = "queued"
    """Its job is on the broker."""
    PROCESSING = "processing"
    """A worker runs its job."""
    DONE = "done"
    """Inferred and exported."""
    FAILED = "failed"
    """Its job failed for good."""


class JobStatus(StrEnum):
    """Life cycle of one inference job."""

    PENDING = "pending"
    """In the outbox, not yet on the broker."""
    QUEUED = "queued"
    """Sent to the broker."""
    STARTED = "started"
    """Taken by a worker (also while waiting for a retry)."""
    INFERRED = "inferred"
    """A result is stored; export is under way."""
    DONE = "done"
    """Result stored and exported."""
    FAILED = "failed"
    """Dead letter: failed for good."""
    SKIPPED = "skipped"
    """Not run because the series is not eligible."""
    SUPERSEDED = "superseded"
    """Replaced by a newer job of the same series."""


class ExportKind(StrEnum):
    """Kind of DICOM object sent back to the PACS."""

    SR = "sr"
    """Structured Report."""
    SC = "sc"
    """Secondary Capture image."""


class ExportStatus(StrEnum):
    """Delivery state of one exported object."""

    PENDING = "pending"
    """Created, not yet sent."""
    SENT = "sent"
    """Accepted by the destination."""
    FAILED = "failed"
    """Last attempt failed; will be retried at next_attempt_at."""
    DEAD = "dead"
    """Gave up after the maximum number of attempts."""


#: Job states from which no further work happens.
FINAL_JOB_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.DONE, JobStatus.FAILED, JobStatus.SKIPPED, JobStatus.SUPERSEDED}
)
