"""Step 2 of the pipeline: classify the series, or reuse the result stored for it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

import db.exports
import db.jobs
import db.results
import worker.metrics
from db.engine import Session
from db.rows import Result
from model.spec import CodedFinding
from worker.context import WorkerContext
from worker.inputs import SeriesInputs
from worker.monitoring import record_series_attributes
from worker.notify.queue import notify_result
from worker.report import Finding
from worker.verdict import verdict_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """The stored result of a series, as the outputs need it.

    Attributes:
        result_id: The result row.
        finding: What the SR and the capture say.
        predecessor_paths: Files of the SRs that this result's SR replaces.
    """

    result_id: int
    finding: Finding
    predecessor_paths: list[str]


def classify_or_reuse(ctx: WorkerContext, inputs: SeriesInputs) -> Verdict:
    """Return the result for these instances and this model, classifying only if none exists.

    Same instances, same model (a retry or a duplicate delivery): the stored result is reused,
    never recomputed, so the SR keeps its UIDs. One transaction.
    """
    classifier = ctx.classifier
    key = ctx.accession_key  # before the transaction: its first use rekeys in one of its own
    with ctx.sessions() as session:
        result = db.results.find_result(
            session=session,
            job_id=inputs.job_id,
            input_fingerprint=inputs.fingerprint,
            model_sha256=classifier.sha256,
        )
        if result is None:
            result, top = _classify(ctx, inputs, session=session, key=key)
        else:
            log.info(
                "Job %d: result %d already exists for these instances", inputs.job_id, result.id
            )
            db.jobs.mark_inferred(session=session, job_id=inputs.job_id)
            top = _top_slices(result, classifier.spec.aggregation.k)
        # In the result's transaction: a stored result always has its notifications queued.
        notify_result(
            session,
            config=ctx.config,
            storage_dir=ctx.runtime.storage_dir,
            result=result,
            datasets=inputs.datasets,
        )
        verdict = Verdict(
            result_id=result.id,
            finding=Finding(
                probability=result.probability,
                suspected=result.suspected,
                threshold=result.threshold,
                top_instance_uids=top,
                concept=CodedFinding(
                    scheme=result.finding_scheme,
                    value=result.finding_value,
                    meaning=result.finding_meaning,
                    short_name=result.finding_name,
                ),
            ),
            predecessor_paths=db.exports.superseded_report_paths(
                session=session, result_id=result.id
            ),
        )
        session.commit()
    return verdict


def warm_up_classifier(ctx: WorkerContext) -> None:
    """Load the model and run one forward pass on a blank batch.

    The first forward pass of a process pays for lazy kernel set-up (about 0.7 s of the first
    series' "started -> inferred" on the 2-core machine, measured with cProfile); done here, at
    worker start, no series waits for it.
    """
    classifier = ctx.classifier
    size = classifier.spec.input_size
    blank = np.zeros((min(ctx.config.batch_size, 32), 3, size, size), dtype=np.float32)
    classifier.predict_probabilities(blank)


def _classify(
    ctx: WorkerContext, inputs: SeriesInputs, *, session: Session, key: bytes
) -> tuple[Result, list[str]]:
    classifier = ctx.classifier
    uids = inputs.sop_instance_uids
    with worker.metrics.inference_timer():
        prediction = classifier.predict_series(inputs.datasets)
    result = db.results.record_result(
        session=session,
        job_id=inputs.job_id,
        verdict=verdict_of(classifier, prediction, input_fingerprint=inputs.fingerprint),
        slice_scores=list(zip(uids, prediction.slice_probabilities, strict=True)),
        shadow=ctx.config.mode == "shadow",
    )
    record_series_attributes(session, inputs, key=key)
    log.info(
        "Series %s: probability %.3f, %s (threshold %.3f, %d slices)",
        inputs.series_instance_uid,
        prediction.probability,
        "suspected" if prediction.suspected else "not suspected",
        prediction.threshold,
        len(uids),
    )
    return result, [uids[i] for i in prediction.top_slices]


def _top_slices(result: Result, count: int) -> list[str]:
    scores = sorted(result.slice_scores, key=lambda score: score.rank)
    return [score.sop_instance_uid for score in scores[:count]]
