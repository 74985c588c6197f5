"""The small DICOM leaf that the listener, the worker and the components above them share.

It lies on the lowest floor of the house, beside ``model`` and ``db``, and imports no other
package of ours (the layers contract in ``pyproject.toml`` forbids those above it). Importing
it pulls in only the standard library and pydantic, never torch, the database, the CLI, or
even pydicom and pynetdicom: the settings import it, and every command (``--help`` included)
imports the settings. ``select_instances``, ``SeriesSelection`` and ``series_facts`` read
pydicom datasets, so they are imported on first use; :mod:`dicom_edge.peers` (pynetdicom) is
imported by its users only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dicom_edge.durable import PART_SUFFIX, write_atomic
from dicom_edge.file_lock import FileLock
from dicom_edge.kernels import KernelFamily
from dicom_edge.network import (
    AE_TITLE_MAX,
    AETitle,
    PacsDestination,
    check_ae_title,
    set_tcp_nodelay,
)
from dicom_edge.sop_classes import (
    CLASSIFIABLE_SOP_CLASSES,
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
)
from dicom_edge.study_choice import SeriesFacts, StudyDecision, choose_series
from dicom_edge.task import PROCESS_SERIES_TASK, ProcessSeriesArgs, process_series_kwargs

if TYPE_CHECKING:
    from dicom_edge.facts import series_facts
    from dicom_edge.selection import SeriesSelection, select_instances

_LAZY = {"SeriesSelection", "select_instances"}
"""Names of dicom_edge.selection (which imports pydicom), loaded on first access."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from dicom_edge import selection

        return getattr(selection, name)
    if name == "series_facts":  # reads pydicom datasets too
        from dicom_edge import facts

        return facts.series_facts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AE_TITLE_MAX",
    "CLASSIFIABLE_SOP_CLASSES",
    "CT_IMAGE_STORAGE",
    "ENHANCED_CT_IMAGE_STORAGE",
    "PART_SUFFIX",
    "PROCESS_SERIES_TASK",
    "AETitle",
    "FileLock",
    "KernelFamily",
    "PacsDestination",
    "ProcessSeriesArgs",
    "SeriesFacts",
    "SeriesSelection",
    "StudyDecision",
    "check_ae_title",
    "choose_series",
    "process_series_kwargs",
    "select_instances",
    "series_facts",
    "set_tcp_nodelay",
    "write_atomic",
]
