"""Accession numbers are stored as an HMAC keyed with the site key, on SQLite and PostgreSQL.

A bare sha256 of a short, sequential number is reversed by hashing every candidate; the HMAC
is not, without the key (``site.key`` in the data folder, mode 600). Rows stored as a bare
sha256 before revision 0010 are rekeyed by the first holder of the key, and keep matching.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from sqlalchemy import Engine, select, text

import db.outcomes
import db.performance
from db.engine import SessionFactory
from db.enums import OutcomeKey
from db.models import Outcome, Study
from db.site_key import KEY_FILE_NAME, site_key
from tests.helpers import record_head_ct_series, seed_job
from validation.outcomes import import_outcomes_file

SERIES = "1.2.826.0.1.3680043.10.4.1"
ACCESSION = "1004"


def _sha256(accession: str) -> str:
    return hashlib.sha256(accession.encode()).hexdigest()


def test_the_site_key_is_made_once_readable_by_the_service_only(tmp_path: Path) -> None:
    key = site_key(tmp_path)
    path = tmp_path / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 32 and site_key(tmp_path) == key  # read back, not made again


def test_an_imported_accession_is_stored_as_its_hmac_never_a_bare_sha256(
    sessions: SessionFactory, engine: Engine, tmp_path: Path
) -> None:
    csv_file = tmp_path / "outcomes.csv"
    csv_file.write_text(f"accession_number,label\n{ACCESSION},stroke\n")
    import_outcomes_file(csv_file, database_url=_url(engine), data_dir=tmp_path)
    with sessions() as session:
        (outcome,) = session.execute(select(Outcome)).scalars()
    assert outcome.key_kind == OutcomeKey.ACCESSION
    assert outcome.key_value != _sha256(ACCESSION)
    # Hashing every 4-digit number finds nothing without the key.
    assert outcome.key_value not in {_sha256(f"{n:04d}") for n in range(10_000)}
    assert outcome.key_value == db.outcomes.accession_hmac(ACCESSION, key=site_key(tmp_path))


def test_rows_stored_as_a_bare_sha256_are_rekeyed_and_keep_matching(
    sessions: SessionFactory, engine: Engine, tmp_path: Path
) -> None:
    # What revision 0009 stored: the study's and the outcome's accession as a bare sha256.
    with sessions() as session:
        record_head_ct_series(session, series=SERIES, count=1)
        seed_job(session, series=SERIES, stage="done")
        session.commit()
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE studies SET accession_sha256 = :h"), {"h": _sha256(ACCESSION)}
        )
        connection.execute(
            text(
                "INSERT INTO outcomes (key_kind, key_value, stroke, source, recorded_at) "
                "VALUES ('accession_sha256', :h, true, 'old.csv', CURRENT_TIMESTAMP)"
            ),
            {"h": _sha256(ACCESSION)},
        )
    with sessions() as session:
        (before,) = db.performance.scored_series(session=session)
        assert before.stroke is True  # still matched before anyone rekeyed
    # The first holder of the key (a worker, `outcomes import`) rekeys every bare hash.
    key = site_key(tmp_path)
    with sessions() as session:
        assert db.outcomes.rekey_legacy_accessions(session=session, key=key) == 2
        session.commit()
        assert db.outcomes.rekey_legacy_accessions(session=session, key=key) == 0
        (study,) = session.execute(select(Study)).scalars()
        (outcome,) = session.execute(select(Outcome)).scalars()
        assert study.accession_sha256 is None
        assert study.accession_hmac == db.outcomes.accession_hmac(ACCESSION, key=key)
        assert (outcome.key_kind, outcome.key_value) == (OutcomeKey.ACCESSION, study.accession_hmac)
        (after,) = db.performance.scored_series(session=session)
        assert after.stroke is True
    # A new import of the same accession updates that outcome: one row, not two.
    csv_file = tmp_path / "outcomes.csv"
    csv_file.write_text(f"accession_number,label\n{ACCESSION},normal\n")
    imported, _ = import_outcomes_file(csv_file, database_url=_url(engine), data_dir=tmp_path)
    assert (imported.added, imported.changed) == (0, 1)


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)
