"""The Celery task the listener sends and the worker runs: its name and its arguments."""

from __future__ import annotations

from typing import TypedDict

PROCESS_SERIES_TASK = "stroke_triage.process_series"
"""The name the worker registers the task under and the listener sends it by."""


class ProcessSeriesArgs(TypedDict):
    """The task's keyword arguments: ids only, never objects."""

    job_id: int
    series_instance_uid: str


def process_series_kwargs(*, job_id: int, series_instance_uid: str) -> ProcessSeriesArgs:
    """The keyword arguments of one ``process_series`` task."""
    return {"job_id": job_id, "series_instance_uid": series_instance_uid}
