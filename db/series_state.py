"""Where a series stands as a person reads it: its stored status, told with its report's fate.

The stored ``series.status`` stays ``processing`` while a worker's exports are retried, and
also when they all gave up: the job is then ``export_failed`` and nothing will try again. The
console (worklist, series page, API, CSV) shows this state instead, so that a report that never
reached the PACS reads "not delivered", never "processing".
"""

from collections.abc import Collection
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, exists, not_, or_

from db.enums import ExportKind, ExportStatus, JobStatus, SeriesStatus
from db.models import Export, Job, Result, Series

#: The order in which a report's export states decide its delivery state (see report_status).
_REPORT_PRECEDENCE = (
    ExportStatus.SENT,
    ExportStatus.DEAD,
    ExportStatus.PENDING,
    ExportStatus.FAILED,
)


class SeriesState(StrEnum):
    """Where a series stands, as the console shows it."""

    RECEIVING = "receiving"
    """Instances are arriving; the quiet period has not yet passed."""
    COMPLETE = "complete"
    """Judged complete; its job waits in the outbox."""
    QUEUED = "queued"
    """Its job is on the broker."""
    PROCESSING = "processing"
    """A worker runs its job, or its report is being sent (retries included)."""
    DONE = "done"
    """Classified, and its report was delivered (to at least one destination)."""
    NOT_DELIVERED = "not_delivered"
    """Classified, but its report reached no destination and nothing will try again (dead)."""
    SKIPPED = "skipped"
    """Not eligible for inference (wrong modality, too few slices, ...)."""
    FAILED = "failed"
    """Its job failed for good: no verdict."""


def report_status(present: Collection[ExportStatus]) -> ExportStatus | None:
    """The delivery state of a report from the states of its SR exports: the one rule.

    ``sent`` once any destination took it; otherwise ``dead`` if any gave up (the report is
    not delivered and nothing will try again), then ``pending``, then ``failed`` (retrying).
    The heat-map SC does not count: a report is its SR. None without SR exports.
    """
    for status in _REPORT_PRECEDENCE:
        if status in present:
            return status
    return None


def series_state(
    stored: SeriesStatus, job_status: JobStatus | None, report: ExportStatus | None
) -> SeriesState:
    """The state shown for a series, from its stored status, current job and report state.

    A series whose job is ``export_failed`` (some export gave up) is ``not_delivered`` when
    its report is dead, ``done`` when its report was delivered (the heat map or a second
    destination failed), and ``processing`` while its report is still being retried.
    """
    if stored is SeriesStatus.PROCESSING and job_status is JobStatus.EXPORT_FAILED:
        if report is ExportStatus.DEAD:
            return SeriesState.NOT_DELIVERED
        if report is ExportStatus.SENT:
            return SeriesState.DONE
    return SeriesState(stored.value)


def _report_has(status: ExportStatus) -> ColumnElement[bool]:
    return exists().where(
        Export.result_id == Result.id, Export.kind == ExportKind.SR, Export.status == status
    )


def state_condition(state: SeriesState) -> ColumnElement[bool]:
    """The SQL twin of :func:`series_state`: rows (series, job, result) shown in ``state``.

    The statement must select from ``series``, ``jobs`` and ``results`` (outer joins allowed).
    """
    flagged = and_(
        Series.status == SeriesStatus.PROCESSING,
        Job.status.is_not(None),
        Job.status == JobStatus.EXPORT_FAILED,
    )
    sent, dead = _report_has(ExportStatus.SENT), _report_has(ExportStatus.DEAD)
    if state is SeriesState.NOT_DELIVERED:
        return and_(flagged, dead, not_(sent))
    if state is SeriesState.DONE:
        return or_(Series.status == SeriesStatus.DONE, and_(flagged, sent))
    if state is SeriesState.PROCESSING:
        return and_(Series.status == SeriesStatus.PROCESSING, not_(and_(flagged, or_(sent, dead))))
    return Series.status == SeriesStatus(state.value)
