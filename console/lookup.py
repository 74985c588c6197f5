"""Finding what a URL names, or answering 404: one place for the API and the dashboard."""

from __future__ import annotations

from fastapi import HTTPException, status

import db.overview
from db.engine import Session
from db.errors import NotFoundError
from db.overview import SeriesDetail


def series_or_404(session: Session, series_instance_uid: str) -> SeriesDetail:
    """The series with this UID and everything shown about it.

    Raises:
        HTTPException: 404 when no series has this UID.
    """
    try:
        return db.overview.series_detail(session=session, series_instance_uid=series_instance_uid)
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
