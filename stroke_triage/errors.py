"""Which errors are the user's to fix: printed as one clear message, not a traceback."""

from __future__ import annotations


def user_facing(exc: BaseException) -> str | None:
    """The message to print for an expected error, or None for a bug (show the traceback)."""
    from db.errors import DbError
    from model.errors import ModelError
    from stroke_triage.demo import DemoError
    from stroke_triage.dicom_peers import PeerError
    from stroke_triage.service import ServiceError

    expected: tuple[type[BaseException], ...] = (
        ServiceError,
        DemoError,
        PeerError,
        ModelError,
        DbError,
        FileNotFoundError,
    )
    if isinstance(exc, expected):
        return str(exc)
    return None
