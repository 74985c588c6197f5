"""Finding a case: the search index the console keeps, and a search as the database matches it.

The console reads each series' first stored instance once and records its Station Name, and its
Accession Number, Patient ID and the parts of its Patient's Name as HMACs (``db.search_index``)
with a key derived from the data folder's site key (``db.site_key``): the database holds no
patient data, yet a search by an exact identifier finds its series. A name matches by whole
parts ("SMITH", "smith john"), not by prefix. Only the admin scope may search by patient name
or ID.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import db.search_index
from console import dicom_view
from console.series_page import stored
from db.engine import SessionFactory
from db.enums import SearchTermKind
from db.overview import Search

log = logging.getLogger(__name__)

#: Series indexed per request at most (each costs one file read); the rest on the next ones.
INDEX_BATCH = 500
#: Held by the request that is indexing.
_INDEXING = threading.Lock()

#: What separates the parts of a name or ID: anything but a letter or digit, in any script.
_SEPARATORS = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class SearchKey:
    """The key identifiers are hashed with, and its id (stored beside each indexed series)."""

    secret: bytes
    key_id: str

    @classmethod
    def derive(cls, site_key: bytes) -> SearchKey:
        """The search key of the data folder's site key (``db.site_key``), for this purpose only.

        One secret per site keys every stored identifier hash; the search derives a key of its
        own from it (the version in the purpose string changes when the normalisation does,
        so that the index is rebuilt).
        """
        secret = hmac.new(site_key, b"stroke-triage series search v2", hashlib.sha256).digest()
        return cls(secret, hashlib.sha256(secret).hexdigest()[:16])

    def hash(self, kind: SearchTermKind, normalised: str) -> str:
        """The HMAC (hex) of one normalised identifier of one kind."""
        message = f"{kind.value}:{normalised}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()


def normalise(text: str) -> str:
    """Upper case, accents removed, runs of what is not a letter or digit (in any script) as
    one space, trimmed: "Øster-Ås" reads "ØSTER AS", "Иванов^Иван" reads "ИВАНОВ ИВАН"."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).upper()
    return _SEPARATORS.sub(" ", plain).strip()


def name_parts(name: str) -> set[str]:
    """The parts of a person's name (DICOM PN ``FAMILY^GIVEN^MIDDLE``, or typed), normalised."""
    return set(normalise(name).split())


def index_terms(key: SearchKey, header: dicom_view.StudyHeader) -> dict[SearchTermKind, set[str]]:
    """The keyed hashes a series is found by, from its header."""
    terms: dict[SearchTermKind, set[str]] = {}
    for kind, value in (
        (SearchTermKind.ACCESSION, header.accession_number),
        (SearchTermKind.PATIENT_ID, header.patient_id),
    ):
        if value and (normal := normalise(value)):
            terms[kind] = {key.hash(kind, normal)}
    if header.patient_name:
        parts = name_parts(header.patient_name)
        if parts:
            terms[SearchTermKind.PATIENT_NAME] = {
                key.hash(SearchTermKind.PATIENT_NAME, part) for part in parts
            }
    return terms


def search_of(key: SearchKey, text: str, *, with_patient: bool) -> Search | None:
    """What a search box's text matches: UIDs and the accession, and for admins the patient.

    None for an empty text. Without ``with_patient`` the patient's name and ID are not
    searched at all: a read token learns nothing from a search by a patient's name.
    """
    text = text.strip()
    if not text:
        return None
    normal = normalise(text)
    accession = key.hash(SearchTermKind.ACCESSION, normal) if normal else None
    if not with_patient:
        return Search(text=text, accession=accession)
    return Search(
        text=text,
        accession=accession,
        patient_id=key.hash(SearchTermKind.PATIENT_ID, normal) if normal else None,
        name_parts=tuple(
            sorted(key.hash(SearchTermKind.PATIENT_NAME, part) for part in name_parts(text))
        ),
    )


def refresh_index(
    sessions: SessionFactory, storage_dir: Path, key: SearchKey, *, batch: int = INDEX_BATCH
) -> int:
    """Index the series not yet in the search index (newest first, ``batch`` at most).

    One request indexes at a time: the others go on with the index as it is (their pages
    show what is indexed; the next request indexes the rest), instead of reading the same
    files at the same moment.

    Returns:
        How many series were indexed (0 when another request is indexing).
    """
    if not _INDEXING.acquire(blocking=False):
        return 0
    try:
        return _index_batch(sessions, storage_dir, key, batch)
    finally:
        _INDEXING.release()


def _index_batch(sessions: SessionFactory, storage_dir: Path, key: SearchKey, batch: int) -> int:
    with sessions() as session:
        todo = db.search_index.unindexed(session=session, key_id=key.key_id, limit=batch)
    if not todo:
        return 0
    # The files are read outside the transaction, which then writes all at once (briefly).
    headers = [
        None
        if item.first_path is None
        else dicom_view.read_header(stored(item.first_path, storage_dir), with_patient=True)
        for item in todo
    ]
    with sessions() as session:
        for item, header in zip(todo, headers, strict=True):
            db.search_index.record_header(
                session=session,
                series_id=item.series_id,
                station_name=None if header is None else header.station_name,
                terms={} if header is None else index_terms(key, header),
                read_ok=header is not None,
                key_id=key.key_id,
            )
        session.commit()
    log.info("Search index: %d series indexed", len(todo))
    return len(todo)
