"""String-valued states and kinds stored in the database."""

from enum import StrEnum


class OutcomeKey(StrEnum):
    """What an outcome (the radiologists' ground truth) is keyed by."""

    STUDY = "study_instance_uid"
    """The Study Instance UID."""
    ACCESSION = "accession_hmac"
    """The HMAC of the Accession Number, keyed with the site key (the number is never stored)."""
    LEGACY_ACCESSION = "accession_sha256"
    """A bare sha256 of the Accession Number, stored before 0010; rekeyed to ``ACCESSION`` by
    the first worker or ``outcomes import`` that holds the site key."""


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


class SeriesChoice(StrEnum):
    """Where a series stands in its study's choice of the one series the model reads."""

    CHOSEN = "chosen"
    """The series the model reads for its study: its report is the study's."""
    PASSED_OVER = "passed_over"
    """Classifiable, but another series of the study suits the model better."""
    NOT_ELIGIBLE = "not_eligible"
    """Not classifiable at all (a localizer, a reformat, too few slices, not CT, ...)."""


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
    EXPORT_FAILED = "export_failed"
    """A result is stored, but an export gave up (dead letter); ``retry-export`` sends it again."""
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


class TokenScope(StrEnum):
    """What an API token may do."""

    READ = "read"
    """Read the worklist, results, jobs, exports and stats; no patient name or ID."""
    ADMIN = "admin"
    """Everything ``read`` may, plus re-queue, re-send and patient name and ID."""


class NotificationEvent(StrEnum):
    """What a notification tells the stroke team."""

    SUSPECTED = "suspected"
    """The model flags the series: suspected stroke."""
    NOT_SUSPECTED = "not_suspected"
    """The model does not flag the series."""
    FAILED = "failed"
    """The series could not be classified, or its report could not be delivered."""


class NotificationChannel(StrEnum):
    """How a notification is delivered."""

    WEBHOOK = "webhook"
    """Signed HTTPS POST of a JSON document."""
    EMAIL = "email"
    """E-mail over SMTP with STARTTLS."""
    HL7 = "hl7"
    """HL7 v2.5.1 ORU^R01 over MLLP."""


class SearchTermKind(StrEnum):
    """Which identifier of a series a search term (a keyed hash) stands for."""

    ACCESSION = "accession"
    """The Accession Number (every token may search by it)."""
    PATIENT_ID = "patient_id"
    """The Patient ID (admin tokens only)."""
    PATIENT_NAME = "patient_name"
    """One part of the Patient's Name, e.g. the family name (admin tokens only)."""


class ProcessKind(StrEnum):
    """Which kind of process a heartbeat comes from."""

    LISTENER = "listener"
    """The DICOM listener that judges series complete (the leader)."""
    WORKER = "worker"
    """A Celery worker (one per node; its pool's processes run the model)."""
