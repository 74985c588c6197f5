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
from model.dicom import SortedSeries
from model.inference import SeriesPrediction
from model.slabs import ClassifiedStack, classified_stack
from model.spec import CodedFinding
from worker.context import WorkerContext
from worker.inputs import SeriesInputs
from worker.monitoring import record_series_attributes
from worker.notify.queue import notify_result
from worker.report import Finding
from worker.verdict import further_findings_of, verdict_of

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
            result, cited = _classify(ctx, inputs, session=session, key=key)
        else:
            log.info(
                "Job %d: result %d already exists for these instances", inputs.job_id, result.id
            )
            db.jobs.mark_inferred(session=session, job_id=inputs.job_id)
            cited = _stored_citations(ctx, inputs, result)
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
                top_instance_uids=cited.top,
                key_instance_uids=cited.key,
                averaging=cited.averaging,
                concept=CodedFinding(
                    scheme=result.finding_scheme,
                    value=result.finding_value,
                    meaning=result.finding_meaning,
                    short_name=result.finding_name,
                ),
                other_findings=[
                    (
                        CodedFinding(
                            scheme=other.finding_scheme,
                            value=other.finding_value,
                            meaning=other.finding_meaning,
                            short_name=other.finding_name,
                        ),
                        other.probability,
                    )
                    for other in result.further_findings
                ],
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


@dataclass(frozen=True)
class Citations:
    """The slices a result names: every slice behind its top images, and one per image."""

    top: list[str]
    """SOP Instance UIDs the SR cites, most suspicious image first."""
    key: list[str]
    """One per top image (a slab's middle slice), for the heat map and the preview."""
    averaging: str | None
    """How thin slices were averaged into slabs, if they were."""


def _classify(
    ctx: WorkerContext, inputs: SeriesInputs, *, session: Session, key: bytes
) -> tuple[Result, Citations]:
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
        further_findings=further_findings_of(prediction),
    )
    record_series_attributes(session, inputs, key=key)
    log.info(
        "Series %s: probability %.3f, %s (threshold %.3f, %d slices%s)",
        inputs.series_instance_uid,
        prediction.probability,
        "suspected" if prediction.suspected else "not suspected",
        prediction.threshold,
        len(uids),
        f" in {len(prediction.slabs)} slabs" if prediction.slabs is not None else "",
    )
    return result, Citations(
        top=[uids[i] for i in prediction.top_slices],
        key=[uids[i] for i in prediction.key_slices],
        averaging=_averaging_text(prediction, len(uids)),
    )


def _stored_citations(ctx: WorkerContext, inputs: SeriesInputs, result: Result) -> Citations:
    """The citations of a stored result: its slabs found again from the headers (the same
    instances and model give the same slabs), ranked by the stored probabilities."""
    spec = ctx.classifier.spec
    uids = inputs.sop_instance_uids
    stored = {score.sop_instance_uid: score.probability for score in result.slice_scores}
    stack = classified_stack(SortedSeries(inputs.datasets), spec.slice_thickness_mm)
    unit_probabilities = [stored.get(uids[members[0]], 0.0) for members in stack.units]
    top = stack.top_units(unit_probabilities, spec.aggregation.k)
    return Citations(
        top=[uids[index] for unit in top for index in stack.units[unit]],
        key=[uids[stack.representative(unit)] for unit in top],
        averaging=_stack_text(stack, len(uids)),
    )


def _averaging_text(prediction: SeriesPrediction, slices: int) -> str | None:
    if prediction.slabs is None or prediction.slab_mm is None:
        return None
    return _slab_sentence(slices, len(prediction.slabs), prediction.slab_mm)


def _stack_text(stack: ClassifiedStack, slices: int) -> str | None:
    if stack.slab_mm is None:
        return None
    return _slab_sentence(slices, len(stack.units), stack.slab_mm)


def _slab_sentence(slices: int, slabs: int, slab_mm: float) -> str:
    return (
        f"Thin slices averaged: {slices} slices classified as {slabs} slabs of {slab_mm:g} mm "
        "(the model reads slices of its training thickness); each cited slab's slices are "
        "listed."
    )
