"""What the worker records for monitoring: series attributes, and the challenger's verdict.

The challenger (``challenger_checkpoint``) runs after the live SR has been sent (or queued), so
it never delays the report; its verdict is stored per model and never sent anywhere. A failing
challenger is logged and never fails the live job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pydicom

import db.challengers
import db.outcomes
import db.performance
from db.engine import Session, SessionFactory
from db.enums import ProcessKind
from db.heartbeats import HeartbeatThread, process_name
from model.checkpoint import SPEC_FILE
from model.spec import ModelSpec
from worker.context import WorkerContext, checkpoint_dir
from worker.inputs import SeriesInputs
from worker.verdict import further_findings_of, verdict_of

log = logging.getLogger(__name__)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def record_series_attributes(session: Session, inputs: SeriesInputs, *, key: bytes) -> None:
    """Store manufacturer, kernel, slice thickness and the keyed hash of the accession."""
    header = inputs.datasets[0]
    thickness = header.get("SliceThickness")
    accession = _text(header.get("AccessionNumber"))
    try:
        thickness_mm = None if thickness in (None, "") else float(thickness)
    except (TypeError, ValueError):
        thickness_mm = None
    db.performance.record_series_attributes(
        session=session,
        series_instance_uid=inputs.series_instance_uid,
        manufacturer=_text(header.get("Manufacturer")),
        convolution_kernel=_text(header.get("ConvolutionKernel")),
        slice_thickness_mm=thickness_mm,
        accession_hmac=None
        if accession is None
        else db.outcomes.accession_hmac(accession, key=key),
    )


def run_challenger(ctx: WorkerContext, inputs: SeriesInputs) -> int | None:
    """Classify the series with the challenger and store its verdict; None if none is set.

    Idempotent: a stored verdict for the same instances and model is kept, not recomputed.
    Errors are logged, never raised: the live result is already out.
    """
    if ctx.config.challenger_checkpoint is None:
        return None
    try:
        challenger = ctx.challenger
        assert challenger is not None
        with ctx.sessions() as session:
            existing = db.challengers.find_challenger_result(
                session=session,
                job_id=inputs.job_id,
                input_fingerprint=inputs.fingerprint,
                model_sha256=challenger.sha256,
            )
            session.commit()
        if existing is not None:
            return existing
        prediction = challenger.predict_series(inputs.datasets)
        verdict = verdict_of(challenger, prediction, input_fingerprint=inputs.fingerprint)
        with ctx.sessions() as session:
            result_id = db.challengers.record_challenger_result(
                session=session,
                job_id=inputs.job_id,
                verdict=verdict,
                further_findings=further_findings_of(prediction),
            )
            session.commit()
    except Exception:  # the live report is out; the challenger must never fail the job
        log.exception("Job %d: the challenger model failed (live result unaffected)", inputs.job_id)
        return None
    log.info(
        "Series %s: challenger %s probability %.3f",
        inputs.series_instance_uid,
        verdict.model_version,
        verdict.probability,
    )
    return result_id


def start_heartbeat(
    ctx: WorkerContext,
    sessions: SessionFactory,
    *,
    node: str | None,
    model_loaded: Callable[[], bool],
) -> HeartbeatThread:
    """Write this worker's heartbeat every few seconds (the console's health page reads it):
    its model's name and version (from the checkpoint's spec) and whether it is loaded."""
    try:
        spec: ModelSpec | None = ModelSpec.from_json(
            (checkpoint_dir(ctx.config) / SPEC_FILE).read_bytes()
        )
    except (OSError, ValueError):
        spec = None

    def details() -> dict[str, Any]:
        return {
            "model_name": None if spec is None else spec.name,
            "model_version": None if spec is None else spec.version,
            "model_loaded": model_loaded(),
            "device": ctx.config.device,
        }

    return HeartbeatThread(
        sessions, kind=ProcessKind.WORKER, name=process_name(node), details=details
    ).start()
