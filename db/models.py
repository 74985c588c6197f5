"""SQLAlchemy 2.0 typed models. No patient names or IDs are stored anywhere."""

from datetime import datetime

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.clock import utcnow
from db.enums import (
    ExportKind,
    ExportStatus,
    JobStatus,
    NotificationChannel,
    NotificationEvent,
    OutcomeKey,
    ProcessKind,
    SearchTermKind,
    SeriesChoice,
    SeriesStatus,
    TokenScope,
)
from db.types import StrEnumType, UTCDateTime

#: Length of DICOM UI values (VR UI is at most 64 characters).
UID_LENGTH = 64

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention shared with the migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Study(Base):
    """A study, known only by its Study Instance UID."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    accession_hmac: Mapped[str | None] = mapped_column(String(64), index=True)
    """HMAC of the Accession Number keyed with the site key, to match imported outcomes (the
    number is not stored; see :mod:`db.site_key`)."""
    accession_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    """Before 0010: a bare sha256 of the Accession Number. Rekeyed into ``accession_hmac``
    (and emptied) by the first process that holds the site key."""


class Series(Base):
    """A received series and where it stands."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    modality: Mapped[str] = mapped_column(String(16))
    series_description: Mapped[str | None] = mapped_column(String(64))
    calling_ae_title: Mapped[str] = mapped_column(String(16))
    status: Mapped[SeriesStatus] = mapped_column(StrEnumType(SeriesStatus), index=True)
    skip_reason: Mapped[str | None] = mapped_column(Text)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When the retention policy deleted its stored instances (their rows stay, as a record)."""
    interrupted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When a delivery of it last ended with an abort; its quiet period restarts from there."""
    manufacturer: Mapped[str | None] = mapped_column(String(64))
    convolution_kernel: Mapped[str | None] = mapped_column(String(64))
    slice_thickness_mm: Mapped[float | None] = mapped_column(Float)
    """Recorded when the study is judged, and by the worker from the slices it classified."""
    series_number: Mapped[int | None] = mapped_column(Integer)
    axial_slices: Mapped[int | None] = mapped_column(Integer)
    """Slices of the axial stack that would be classified (when the study was judged)."""
    coverage_mm: Mapped[float | None] = mapped_column(Float)
    """Length of that stack along its normal, plus one slice thickness."""
    derived: Mapped[bool | None] = mapped_column(Boolean)
    """Its images are derived (a reformat), not original."""
    choice: Mapped[SeriesChoice | None] = mapped_column(StrEnumType(SeriesChoice, length=16))
    """Its place in its study's choice of one series (None: not judged since revision 0013)."""
    choice_reason: Mapped[str | None] = mapped_column(Text)
    """Why it was chosen, or why not."""

    study: Mapped[Study] = relationship(lazy="joined", innerjoin=True)


class Instance(Base):
    """One stored SOP instance; ``path`` is relative to the storage root."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    path: Mapped[str] = mapped_column(String(1024))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    size_bytes: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Job(Base):
    """One inference job of a series, with the time of each stage."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    status: Mapped[JobStatus] = mapped_column(StrEnumType(JobStatus), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    instance_count: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(128))
    """Which worker took the job last (Celery node name and process id)."""
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    inferred_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    exported_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """While queued or started: when the job counts as lost and is published again."""
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When the worker running the job last renewed its lease."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    series: Mapped[Series] = relationship(lazy="joined", innerjoin=True)


class VerdictColumns:
    """A model's verdict on a series and its provenance (``db.results.Verdict``), as columns."""

    probability: Mapped[float] = mapped_column(Float)
    suspected: Mapped[bool] = mapped_column(Boolean)
    threshold: Mapped[float] = mapped_column(Float)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    model_sha256: Mapped[str] = mapped_column(String(64))
    input_fingerprint: Mapped[str] = mapped_column(String(64))
    precision: Mapped[str] = mapped_column(String(8))
    device: Mapped[str] = mapped_column(String(32))
    # What the model detects (its spec's finding). No default: a row that does not say what it
    # found is refused (migration 0009 gave the rows made before it the old checkpoints' one).
    finding_scheme: Mapped[str] = mapped_column(String(16))
    finding_value: Mapped[str] = mapped_column(String(64))
    finding_meaning: Mapped[str] = mapped_column(String(128))
    finding_name: Mapped[str] = mapped_column(String(16))


class Result(VerdictColumns, Base):
    """The model's verdict on one job, with the model's identity (provenance)."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("series_id", "input_fingerprint", "model_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Made in shadow mode: stored, sent only to PACS marked shadow."""
    replaces_result_id: Mapped[int | None] = mapped_column(
        ForeignKey("results.id", ondelete="SET NULL")
    )
    """The study's report this one revises (the study's current result when it was stored)."""
    preview_path: Mapped[str | None] = mapped_column(String(1024))
    """The non-diagnostic JPEG preview of the key slices, once written."""

    job: Mapped[Job] = relationship(lazy="joined", innerjoin=True)
    slice_scores: Mapped[list["SliceScore"]] = relationship(
        lazy="selectin", order_by="SliceScore.rank", viewonly=True
    )
    further_findings: Mapped[list["ResultFinding"]] = relationship(
        lazy="selectin", order_by="ResultFinding.position", viewonly=True
    )
    """A multi-output model's other findings; the verdict's own is in the finding columns."""


class SliceScore(Base):
    """Per-slice probability of one result; rank 1 is the most suspicious slice."""

    __tablename__ = "slice_scores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    probability: Mapped[float] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)


class FurtherFindingColumns:
    """A further finding of a multi-output model and its probability (``db.findings``), as
    columns.

    The verdict's finding (the output that drives it) is the verdict's own finding columns;
    these are the others the model's spec reports, in its order, with no verdict of their own.
    """

    position: Mapped[int] = mapped_column(Integer)
    """Order in the model's spec (1 = first after the verdict's finding)."""
    finding_scheme: Mapped[str] = mapped_column(String(16))
    finding_value: Mapped[str] = mapped_column(String(64))
    finding_meaning: Mapped[str] = mapped_column(String(128))
    finding_name: Mapped[str] = mapped_column(String(16))
    probability: Mapped[float] = mapped_column(Float)
    """Series-level probability, aggregated with the verdict's rule."""


class ResultFinding(FurtherFindingColumns, Base):
    """A further finding of the live model on a result's series, with its probability."""

    __tablename__ = "result_findings"
    __table_args__ = (UniqueConstraint("result_id", "finding_scheme", "finding_value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), index=True)


class Export(Base):
    """One DICOM object sent (or to be sent) to one destination."""

    __tablename__ = "exports"
    __table_args__ = (UniqueConstraint("result_id", "kind", "destination"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"))
    kind: Mapped[ExportKind] = mapped_column(StrEnumType(ExportKind, length=8))
    destination: Mapped[str] = mapped_column(String(128))
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    path: Mapped[str] = mapped_column(String(1024))
    # The file as the worker wrote it: what is sent must still be that (NULL before 0014).
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[ExportStatus] = mapped_column(StrEnumType(ExportStatus), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    result: Mapped[Result] = relationship(lazy="joined", innerjoin=True)


class ChallengerResult(VerdictColumns, Base):
    """A challenger model's verdict on a series: stored beside the live result, never sent."""

    __tablename__ = "challenger_results"
    __table_args__ = (UniqueConstraint("series_id", "input_fingerprint", "model_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    further_findings: Mapped[list["ChallengerFinding"]] = relationship(
        lazy="selectin", order_by="ChallengerFinding.position", viewonly=True
    )
    """A multi-output challenger's other findings, as :attr:`Result.further_findings`."""


class ChallengerFinding(FurtherFindingColumns, Base):
    """A further finding of a challenger model on a series, with its probability."""

    __tablename__ = "challenger_result_findings"
    __table_args__ = (UniqueConstraint("challenger_result_id", "finding_scheme", "finding_value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    challenger_result_id: Mapped[int] = mapped_column(
        ForeignKey("challenger_results.id", ondelete="CASCADE"), index=True
    )


class Outcome(Base):
    """The radiologists' ground truth for a study (by Study Instance UID or accession)."""

    __tablename__ = "outcomes"
    __table_args__ = (UniqueConstraint("key_kind", "key_value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_kind: Mapped[OutcomeKey] = mapped_column(StrEnumType(OutcomeKey, length=32))
    key_value: Mapped[str] = mapped_column(String(UID_LENGTH))
    stroke: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(256))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OutcomeChange(Base):
    """A changed label of an outcome, with its time (the history of corrections)."""

    __tablename__ = "outcome_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    outcome_id: Mapped[int] = mapped_column(
        ForeignKey("outcomes.id", ondelete="CASCADE"), index=True
    )
    previous_stroke: Mapped[bool] = mapped_column(Boolean)
    stroke: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(256))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiToken(Base):
    """A bearer token of the admin API; only the SHA-256 of the secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[TokenScope] = mapped_column(StrEnumType(TokenScope, length=8))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ConsoleSession(Base):
    """A dashboard login: the cookie carries a random secret, the row only its SHA-256.

    Logging out ends the row, so the old cookie no longer works; so does revoking its token.
    """

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SeriesHeader(Base):
    """What the console read from a series' first stored instance, for search and display.

    The Station Name is kept as it is (a device, not a person); the patient's name and ID and
    the Accession Number only as keyed hashes (:class:`SeriesSearchTerm`), so a search can
    match them while the database still holds no patient data.
    """

    __tablename__ = "series_headers"

    series_id: Mapped[int] = mapped_column(
        ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )
    station_name: Mapped[str | None] = mapped_column(String(64), index=True)
    read_ok: Mapped[bool] = mapped_column(Boolean)
    """False when no stored instance could be read (purged, or not on this host)."""
    key_id: Mapped[str] = mapped_column(String(16))
    """Which key the terms were hashed with (a changed key makes them unmatchable)."""
    indexed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SeriesSearchTerm(Base):
    """One keyed hash (HMAC-SHA256) of an identifier of a series, as the search matches it."""

    __tablename__ = "series_search_terms"
    __table_args__ = (UniqueConstraint("series_id", "kind", "term_hmac"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    kind: Mapped[SearchTermKind] = mapped_column(StrEnumType(SearchTermKind))
    term_hmac: Mapped[str] = mapped_column(String(64), index=True)


class Heartbeat(Base):
    """A listener or worker process saying it is alive, every few seconds, with what it knows."""

    __tablename__ = "heartbeats"
    __table_args__ = (UniqueConstraint("kind", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[ProcessKind] = mapped_column(StrEnumType(ProcessKind))
    name: Mapped[str] = mapped_column(String(128))
    """The process: host, node name and process id."""
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """Set when the process stopped cleanly; a process that died just stops beating."""
    details: Mapped[str] = mapped_column(Text)
    """What the process knows, as JSON (model version, disk free, ...): no patient data."""


class AuditEntry(Base):
    """One admin action: who (token name), what, on what, when, and how it ended."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(128))
    result: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)


class Notification(Base):
    """One message (webhook, e-mail, HL7) about one event, to one notification destination.

    Identifiers of the patient are never stored: the sender reads them, when a destination
    needs them, from ``source_path`` (a stored instance or the SR) at the time it sends.
    """

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("event_key", "destination"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    result_id: Mapped[int | None] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"))
    event: Mapped[NotificationEvent] = mapped_column(StrEnumType(NotificationEvent))
    event_key: Mapped[str] = mapped_column(String(64))
    """What happened, once: ``result:<id>`` (a verdict) or ``failed:job:<id>`` (the series'
    failure: not classified, or its report not delivered); rows written before said
    ``job:<id>`` or ``export:<id>``."""
    destination: Mapped[str] = mapped_column(String(64))
    """The destination's name in the settings."""
    channel: Mapped[NotificationChannel] = mapped_column(StrEnumType(NotificationChannel))
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    """Sent with the message (HL7 MSH-10, webhook payload, e-mail Message-ID)."""
    source_path: Mapped[str | None] = mapped_column(String(1024))
    payload: Mapped[str] = mapped_column(Text)
    """The message content as JSON, frozen when the row is written, so a resend is identical."""
    status: Mapped[ExportStatus] = mapped_column(StrEnumType(ExportStatus), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
