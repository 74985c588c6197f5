"""The worklist's search, filters and paging, and what it shows of each series.

The query lives in the URL (a GET form), so a search is a link that can be shared, refreshed
and bookmarked. Patient name and ID are read from the stored files for the rows of one page,
and only for the admin scope; the database holds neither.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from urllib.parse import urlencode

import db.overview
from console import dicom_view
from console.search import SearchKey, search_of
from console.series_page import stored
from console.viewer import viewer_link
from db.engine import Session
from db.overview import Filters, SeriesRow, SeriesState

#: The page sizes offered; the first is the default.
PAGE_SIZES = (50, 25, 100, 200)
#: The verdict filter's values.
VERDICTS = ("suspected", "not_suspected", "none")


def _date(text: str, name: str, errors: list[str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append(f"{name} must be a date (YYYY-MM-DD), not {text!r}.")
        return None


@dataclass(frozen=True)
class WorklistQuery:
    """What the worklist was asked for: a search, filters, and which page of what size."""

    q: str = ""
    verdict: str = ""
    status: str = ""
    station: str = ""
    since: date | None = None
    """First day (UTC) the last instance may have arrived on."""
    until: date | None = None
    """Last day (UTC), included."""
    page: int = 1
    size: int = PAGE_SIZES[0]

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> tuple[WorklistQuery, list[str]]:
        """The query from a URL's parameters, and what was wrong in them (ignored)."""
        errors: list[str] = []
        verdict = params.get("verdict", "")
        if verdict and verdict not in VERDICTS:
            errors.append(f"verdict must be one of {', '.join(VERDICTS)}.")
            verdict = ""
        status = params.get("status", "")
        if status and status not in {s.value for s in SeriesState}:
            errors.append(f"status must be one of {', '.join(s.value for s in SeriesState)}.")
            status = ""
        try:
            size = int(params.get("size", PAGE_SIZES[0]))
            page = max(1, int(params.get("page", 1)))
        except ValueError:
            errors.append("page and size must be whole numbers.")
            size, page = PAGE_SIZES[0], 1
        if size not in PAGE_SIZES:
            size = PAGE_SIZES[0]
        return (
            cls(
                q=params.get("q", "").strip()[:200],
                verdict=verdict,
                status=status,
                station=params.get("station", "").strip(),
                since=_date(params.get("since", ""), "From", errors),
                until=_date(params.get("until", ""), "To", errors),
                page=page,
                size=size,
            ),
            errors,
        )

    @property
    def narrowed(self) -> bool:
        """Whether a search or a filter is set (the plain worklist otherwise)."""
        return any((self.q, self.verdict, self.status, self.station, self.since, self.until))

    @property
    def offset(self) -> int:
        """Rows before this page."""
        return (self.page - 1) * self.size

    def filters(self, key: SearchKey, *, with_patient: bool) -> Filters:
        """The database filters of this query (patient searched only ``with_patient``)."""
        return Filters(
            since=None if self.since is None else datetime.combine(self.since, time.min, UTC),
            until=None
            if self.until is None
            else datetime.combine(self.until + timedelta(days=1), time.min, UTC),
            suspected={"suspected": True, "not_suspected": False}.get(self.verdict),
            without_result=self.verdict == "none",
            series_status=SeriesState(self.status) if self.status else None,
            station=self.station or None,
            search=search_of(key, self.q, with_patient=with_patient),
        )

    def url(self, **changes: object) -> str:
        """The worklist URL of this query, with some values changed (e.g. ``page=2``)."""
        changed = replace(self, **changes)  # type: ignore[arg-type]
        params = {
            "q": changed.q,
            "verdict": changed.verdict,
            "status": changed.status,
            "station": changed.station,
            "since": "" if changed.since is None else changed.since.isoformat(),
            "until": "" if changed.until is None else changed.until.isoformat(),
            "size": "" if changed.size == PAGE_SIZES[0] else str(changed.size),
            "page": "" if changed.page == 1 else str(changed.page),
        }
        query = urlencode({name: value for name, value in params.items() if value})
        return f"/?{query}" if query else "/"


@dataclass(frozen=True)
class Paging:
    """Where a page is in its list: rows first to last of total, and its neighbours' URLs."""

    first: int
    last: int
    total: int
    previous_url: str | None
    next_url: str | None

    @classmethod
    def of(cls, query: WorklistQuery, *, shown: int, total: int) -> Paging:
        """The paging of ``shown`` rows of ``query``'s page in a list of ``total``."""
        pages = max(1, math.ceil(total / query.size))
        return cls(
            first=query.offset + 1 if shown else 0,
            last=query.offset + shown,
            total=total,
            previous_url=query.url(page=query.page - 1) if query.page > 1 else None,
            next_url=query.url(page=query.page + 1) if query.page < pages else None,
        )


@dataclass(frozen=True)
class ShownRow:
    """One series as the worklist shows it."""

    row: SeriesRow
    sender: str
    """Station Name, else the calling AE title."""
    accession_number: str | None
    patient_name: str | None
    """Only for the admin scope; None otherwise, or when the files are gone."""
    patient_id: str | None
    viewer_url: str | None


def shown_rows(
    session: Session,
    rows: Sequence[SeriesRow],
    *,
    storage_dir: Path,
    viewer_template: str,
    with_patient: bool,
) -> list[ShownRow]:
    """The rows with what their first stored instance says, and their viewer links."""
    paths = db.overview.first_instances(
        session=session, series_instance_uids=[row.series_instance_uid for row in rows]
    )
    shown = []
    for row in rows:
        path = paths.get(row.series_instance_uid)
        header = (
            None
            if path is None
            else dicom_view.read_header(stored(path, storage_dir), with_patient=with_patient)
        )
        accession = None if header is None else header.accession_number
        shown.append(
            ShownRow(
                row=row,
                sender=row.station_name
                or (None if header is None else header.station_name)
                or row.calling_ae_title,
                accession_number=accession,
                patient_name=None if header is None or not with_patient else header.patient_name,
                patient_id=None if header is None or not with_patient else header.patient_id,
                viewer_url=viewer_link(
                    viewer_template,
                    study_instance_uid=row.study_instance_uid,
                    series_instance_uid=row.series_instance_uid,
                    accession_number=accession,
                ),
            )
        )
    return shown
