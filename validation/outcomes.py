"""`stroke-triage outcomes import FILE.csv`: the radiologists' ground truth per study.

The file has a key column (``study_instance_uid`` or ``accession_number``) and a ``label``
column (stroke / normal, 1 / 0, true / false). Accession numbers are stored only as their HMAC
with the data folder's site key (:mod:`db.site_key`). Importing the same file again changes
nothing; a changed label is recorded with its time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import db.outcomes
from db.engine import create_engine_for, make_session_factory, migrate
from db.enums import OutcomeKey
from db.site_key import site_key
from validation.labels_file import read_label_rows

log = logging.getLogger(__name__)

OUTCOME_KEY_COLUMNS = ("study_instance_uid", "accession_number")


def read_outcomes(path: Path, *, key: bytes) -> tuple[list[db.outcomes.OutcomeRecord], list[str]]:
    """Parse an outcomes file; rows with an unknown label or no key are listed, not stored.

    Raises:
        SiteValidationError: The file is missing or lacks a key or label column.
    """
    read = read_label_rows(path, key_columns=OUTCOME_KEY_COLUMNS, what="outcomes")
    records: list[db.outcomes.OutcomeRecord] = []
    problems = list(read.problems)
    for row in read.rows:
        study = row.keys.get("study_instance_uid")
        accession = row.keys.get("accession_number")
        if study:
            records.append(db.outcomes.OutcomeRecord(OutcomeKey.STUDY, study, row.stroke))
        elif accession:
            hashed = db.outcomes.accession_hmac(accession, key=key)
            records.append(db.outcomes.OutcomeRecord(OutcomeKey.ACCESSION, hashed, row.stroke))
        else:
            problems.append(f"line {row.line}: no study UID or accession number; row ignored")
    return records, problems


def import_outcomes_file(
    path: Path, *, database_url: str, data_dir: Path
) -> tuple[db.outcomes.OutcomeImport, list[str]]:
    """Read the file and store its outcomes in one transaction (keyed with the site key)."""
    key = site_key(data_dir)
    records, problems = read_outcomes(path, key=key)
    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        sessions = make_session_factory(engine)
        with sessions() as session:
            db.outcomes.rekey_legacy_accessions(session=session, key=key)
            result = db.outcomes.import_outcomes(session=session, records=records, source=path.name)
            session.commit()
    finally:
        engine.dispose()
    return result, problems


def run_outcomes_import(path: Path, *, database_url: str, data_dir: Path) -> int:
    """`stroke-triage outcomes import`: store the file and print what changed."""
    result, problems = import_outcomes_file(path, database_url=database_url, data_dir=data_dir)
    for problem in problems:
        print(f"{path.name}: {problem}")
    print(f"Outcomes: {result.added} new, {result.changed} changed, {result.unchanged} unchanged.")
    return 0
