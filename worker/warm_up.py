"""Worker start-up: do once, before the first series, the work it would otherwise wait for."""

from __future__ import annotations

import logging

from worker.classification import warm_up_classifier
from worker.context import WorkerContext

log = logging.getLogger(__name__)


def warm_up(ctx: WorkerContext) -> None:
    """Do, at worker start, the one-time work the first series would otherwise wait for.

    A forward pass (:func:`worker.classification.warm_up_classifier`), and highdicom's tables of
    the DICOM standard, which it parses from JSON on the first SR it builds (0.9-1.5 s on the
    2-core machine, measured with cProfile of the first job).
    """
    warm_up_classifier(ctx)
    # highdicom caches this table (lru_cache) on first use; private, so guarded.
    try:
        from highdicom._standard_utils import get_module_attribute_map
    except ImportError:  # another highdicom version: the first SR loads it, as before
        return
    get_module_attribute_map()


def warm_up_or_log(ctx: WorkerContext) -> None:
    """:func:`warm_up`, logging a failure: the first task raises it again, where it is recorded."""
    try:
        warm_up(ctx)
    except Exception:
        log.exception("The model could not be loaded at start-up")
