"""Judging a quiet study: which of its series the model reads, and why not each other one.

Each series just received is first judged alone (:func:`dicom_edge.select_instances`: is there
an axial stack of the head to classify?); those that can be classified are described
(:func:`dicom_edge.series_facts`) and compared, with the series of the study judged before,
by :func:`dicom_edge.choose_series`. The chosen series gets a job when it is new (first judged,
newly received, or newly chosen); every other series keeps its reason in the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import pydicom

import db.receiving
import db.studies
import listener.metrics
from db.engine import Session
from db.enums import SeriesChoice, SeriesStatus
from db.rows import Job, Series
from dicom_edge import (
    KernelFamily,
    SeriesFacts,
    SeriesSelection,
    choose_series,
    select_instances,
    series_facts,
)

log = logging.getLogger(__name__)

ReadHeader = Callable[[str], pydicom.Dataset | None]
"""Reads a stored instance's header by its path in the storage folder (None: unreadable)."""


@dataclass(frozen=True)
class StudyRules:
    """What the choice of a study's series depends on: the model's thickness, the site's kernels."""

    min_slices: int
    model_thickness_mm: float
    site_kernels: Mapping[str, KernelFamily]


@dataclass(frozen=True)
class _Judged:
    series: Series
    selection: SeriesSelection
    facts: SeriesFacts | None


def judge_study(
    session: Session,
    received: Sequence[Series],
    *,
    rules: StudyRules,
    read_header: ReadHeader,
    now: datetime,
) -> Job | None:
    """Judge the quiet series of one study and record the study's choice (committed).

    Args:
        session: Database session; committed here.
        received: The study's series that were receiving and are now quiet.
        rules: The model's slice thickness and the site's kernel table.
        read_header: Reads a stored instance's header.
        now: Current time.

    Returns:
        The job of the chosen series, if it needs one (new, newly received or newly chosen).
    """
    judged = [
        _judge_series(session, series, rules=rules, read_header=read_header) for series in received
    ]
    for entry in judged:
        uid = entry.series.series_instance_uid
        if entry.facts is None:
            db.studies.mark_not_eligible(
                session=session, series_instance_uid=uid, reason=entry.selection.reason, now=now
            )
            listener.metrics.series_skipped(entry.selection.reason)
            log.info("Series %s not classifiable: %s", uid, entry.selection.reason)
        else:
            facts = entry.facts
            db.studies.record_series_facts(
                session=session,
                series_instance_uid=uid,
                series_number=facts.series_number,
                convolution_kernel=facts.kernel,
                slice_thickness_mm=facts.slice_thickness_mm,
                axial_slices=facts.slices,
                coverage_mm=facts.coverage_mm,
                derived=facts.derived,
            )
    new = {entry.series.series_instance_uid: entry.facts for entry in judged if entry.facts}
    study = db.studies.study_series(session=session, study_id=received[0].study_id)
    # A series that cannot be read again (its job failed for good, its files were deleted) is
    # neither the incumbent nor a candidate: a readable series arriving later gets the report.
    fallen = {
        series.series_instance_uid: why
        for series in study
        if series.series_instance_uid not in new and (why := _cannot_be_read_again(series))
    }
    earlier = [
        _stored_facts(series)
        for series in study
        if series.series_instance_uid not in new
        and series.series_instance_uid not in fallen
        and series.choice in (SeriesChoice.CHOSEN, SeriesChoice.PASSED_OVER)
        and series.axial_slices
    ]
    incumbent = next(
        (
            s.series_instance_uid
            for s in study
            if s.choice is SeriesChoice.CHOSEN and s.series_instance_uid not in fallen
        ),
        None,
    )
    if not new and (incumbent is not None or not earlier):
        # Nothing classifiable arrived, and the study's chosen series (if any) stands.
        session.commit()
        return None
    decision = choose_series(
        [*new.values(), *earlier],
        model_thickness_mm=rules.model_thickness_mm,
        site_kernels=rules.site_kernels,
        incumbent=incumbent,
    )
    chosen = decision.chosen
    labels = {facts.series_instance_uid: facts.label() for facts in [*new.values(), *earlier]}
    for series in study:
        uid = series.series_instance_uid
        if series.choice is SeriesChoice.CHOSEN and uid in fallen:
            reason = f"not read again: {fallen[uid]}"
            if chosen is not None:
                reason += f"; chosen: {labels[chosen]}"
            db.studies.withdraw_choice(session=session, series_instance_uid=uid, reason=reason)
    job = db.studies.apply_choice(
        session=session,
        chosen=chosen,
        reasons=decision.reasons,
        new_job=chosen is not None and (chosen in new or chosen != incumbent),
        now=now,
    )
    session.commit()
    for uid in new:
        if uid != chosen:
            listener.metrics.series_skipped(decision.reasons[uid])
            log.info("Series %s not chosen: %s", uid, decision.reasons[uid])
    if chosen is not None and chosen != incumbent and incumbent is not None:
        log.info("Study %s: series %s replaces series %s", _study_uid(received), chosen, incumbent)
    return job


def _judge_series(
    session: Session, series: Series, *, rules: StudyRules, read_header: ReadHeader
) -> _Judged:
    """Whether one series can be classified at all, and if so its facts."""
    uid = series.series_instance_uid
    instances = db.receiving.series_instances(session=session, series_instance_uid=uid)
    # Every instance is looked at: a series may mix axial slices with reformats or localizers
    # in any order (the worker applies the same selection to the job).
    headers = [h for h in (read_header(instance.path) for instance in instances) if h is not None]
    try:
        selection = select_instances(headers, min_slices=rules.min_slices)
        facts = (
            replace(
                series_facts(uid, [headers[i] for i in selection.selected]),
                description=series.series_description or "",
            )
            if selection.classify
            else None
        )
    except Exception as exc:  # one odd series must never block the judging of the others
        log.exception("Series %s cannot be judged", uid)
        selection, facts = SeriesSelection(False, f"cannot be judged ({type(exc).__name__})"), None
    return _Judged(series, selection, facts)


def _cannot_be_read_again(series: Series) -> str | None:
    """Why a series judged before can no longer be the study's series (None: it can)."""
    if series.status is SeriesStatus.FAILED:
        return "its job failed for good"
    if series.purged_at is not None:
        return "its files were deleted by the retention policy"
    if series.instance_count == 0:
        return "no instances of it are left"
    return None


def _stored_facts(series: Series) -> SeriesFacts:
    """The facts recorded when a series of the study was judged before."""
    return SeriesFacts(
        series_instance_uid=series.series_instance_uid,
        series_number=series.series_number,
        description=series.series_description or "",
        kernel=series.convolution_kernel,
        slice_thickness_mm=series.slice_thickness_mm,
        coverage_mm=series.coverage_mm or 0.0,
        slices=series.axial_slices or 0,
        derived=bool(series.derived),
    )


def _study_uid(received: Sequence[Series]) -> str:
    return received[0].study.study_instance_uid
