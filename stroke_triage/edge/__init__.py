"""What the DICOM edge (listener) and the worker share, and nothing else of ours.

The listener and the worker may import this package and no other part of ``stroke_triage``;
it imports only the standard library, pydantic, pydicom and pynetdicom, so importing it never
pulls in torch, the database or the CLI.
"""

from __future__ import annotations

from stroke_triage.edge.durable import PART_SUFFIX, write_atomic
from stroke_triage.edge.network import (
    AE_TITLE_MAX,
    AETitle,
    PacsDestination,
    check_ae_title,
    set_tcp_nodelay,
)
from stroke_triage.edge.sop_classes import (
    CLASSIFIABLE_SOP_CLASSES,
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
)
from stroke_triage.edge.task import PROCESS_SERIES_TASK, ProcessSeriesArgs, process_series_kwargs

__all__ = [
    "AE_TITLE_MAX",
    "CLASSIFIABLE_SOP_CLASSES",
    "CT_IMAGE_STORAGE",
    "ENHANCED_CT_IMAGE_STORAGE",
    "PART_SUFFIX",
    "PROCESS_SERIES_TASK",
    "AETitle",
    "PacsDestination",
    "ProcessSeriesArgs",
    "check_ae_title",
    "process_series_kwargs",
    "set_tcp_nodelay",
    "write_atomic",
]
