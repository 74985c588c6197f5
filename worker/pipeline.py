"""The work behind one task: classify a completed series, record it, report it to PACS.

Four steps, each in its own module: load the job's inputs (:mod:`worker.inputs`), classify or
reuse the stored result (:mod:`worker.classification`), write the SR and the capture durably
(:mod:`worker.outputs`) with the alert's preview (:mod:`worker.preview`), and queue and send
the exports (:mod:`worker.outbox`).

Idempotent: the same instances and the same model give one result row and one SR with
the same UIDs however often this runs; only exports not yet sent are sent again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from db.errors import JobStateError
from worker.classification import classify_or_reuse
from worker.context import WorkerContext
from worker.inputs import JobSkipped, load_inputs
from worker.monitoring import run_challenger
from worker.notify.send import send_alerts_without_report
from worker.outbox import export_outputs
from worker.outputs import write_outputs
from worker.preview import write_preview


@dataclass(frozen=True)
class Outcome:
    """What one run of the pipeline produced."""

    job_id: int
    result_id: int | None
    suspected: bool | None
    probability: float | None
    report_path: Path | None
    skipped: str | None = None


def process_series(
    ctx: WorkerContext, *, job_id: int, series_instance_uid: str, worker: str | None = None
) -> Outcome:
    """Classify the series of ``job_id``, store the result and send the reports.

    Args:
        ctx: This worker process's context.
        job_id: The job; its row names the series.
        series_instance_uid: The series the task names; must be the job's.
        worker: Name of this worker, recorded on the job.

    Returns:
        What was done. Exports that fail stay in the outbox for the sweeper; the job is
        finished (``exported_at``) once every export is sent.

    Raises:
        SeriesMismatchError: The task's series is not the job's.
        SeriesUnreadableError: The series was purged, holds no CT image, or cannot be read.
    """
    inputs = load_inputs(ctx, job_id=job_id, series_instance_uid=series_instance_uid, worker=worker)
    if isinstance(inputs, JobSkipped):
        return Outcome(job_id, None, None, None, None, skipped=inputs.status)
    verdict = classify_or_reuse(ctx, inputs)
    try:
        outputs = write_outputs(ctx, inputs, verdict)
        # Before the exports: the alert that follows them links it.
        write_preview(ctx, inputs, verdict)
        export_outputs(
            ctx.sessions,
            job_id=job_id,
            result_id=verdict.result_id,
            outputs=outputs,
            config=ctx.config,
        )
    except JobStateError:
        raise  # the job moved on (superseded): its successor reports the series
    except Exception:
        # The verdict is stored: the stroke team hears of it even though its SR could not be
        # made or queued (the job's failure is recorded by the caller and told to IT).
        send_alerts_without_report(ctx.sessions, config=ctx.config, result_id=verdict.result_id)
        raise
    # After the live SR has gone out (or is queued for retry): never delays it.
    run_challenger(ctx, inputs)
    finding = verdict.finding
    return Outcome(
        job_id, verdict.result_id, finding.suspected, finding.probability, outputs[0].path
    )
