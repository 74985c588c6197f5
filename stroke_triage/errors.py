"""Which errors are the user's to fix: printed as one clear message, not a traceback."""

from __future__ import annotations

import sys

#: (module, class) of the expected errors. A module is looked up only if it is loaded already:
#: an exception of a class cannot exist before its module is imported, and importing, say,
#: ``stroke_triage.demo`` just to test an error would load torch (15-40 s) on every failure.
EXPECTED: tuple[tuple[str, str], ...] = (
    ("stroke_triage.service", "ServiceError"),
    ("stroke_triage.demo", "DemoError"),
    ("dicom_edge.peers", "PeerError"),
    ("console.errors", "ConsoleError"),
    ("model.errors", "ModelError"),
    ("db.errors", "DbError"),
    ("validation.labels_file", "SiteValidationError"),
)


def user_facing(exc: BaseException) -> str | None:
    """The message to print for an expected error, or None for a bug (show the traceback)."""
    if isinstance(exc, FileNotFoundError):
        return str(exc)
    for module_name, class_name in EXPECTED:
        module = sys.modules.get(module_name)
        expected = getattr(module, class_name, None) if module is not None else None
        if isinstance(expected, type) and isinstance(exc, expected):
            return str(exc)
    return None
