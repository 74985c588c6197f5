"""What the DICOM edge (listener) and the worker share, and nothing else of ours.

The listener and the worker may import this package and no other part of ``stroke_triage``;
it imports only the standard library and pydantic, so importing it never pulls in torch, the
database, the CLI, or even pydicom and pynetdicom: the settings import it, and every command
(``--help`` included) imports the settings. ``select_instances`` and ``SeriesSelection`` read
pydicom datasets, so they are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dicom_edge.durable import PART_SUFFIX, write_atomic
from dicom_edge.file_lock import FileLock
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
from dicom_edge.task import PROCESS_SERIES_TASK, ProcessSeriesArgs, process_series_kwargs

if TYPE_CHECKING:
    from dicom_edge.selection import SeriesSelection, select_instances

_LAZY = {"SeriesSelection", "select_instances"}
"""Names of dicom_edge.selection (which imports pydicom), loaded on first access."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from dicom_edge import selection

        return getattr(selection, name)
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
    "PacsDestination",
    "ProcessSeriesArgs",
    "SeriesSelection",
    "check_ae_title",
    "process_series_kwargs",
    "select_instances",
    "set_tcp_nodelay",
    "write_atomic",
]
