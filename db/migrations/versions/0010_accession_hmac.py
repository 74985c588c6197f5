"""Accession numbers keyed with the site key (issue 23): a column for their HMAC.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

The key lives in the data folder, not in the database, so this migration cannot compute the
HMACs: the bare sha256 values already stored stay in ``accession_sha256`` until the first worker
or ``outcomes import`` that holds the key rekeys them (``db.outcomes.rekey_legacy_accessions``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``studies.accession_hmac`` (indexed)."""
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("accession_hmac", sa.String(64), nullable=True))
        batch.create_index(batch.f("ix_studies_accession_hmac"), ["accession_hmac"])


def downgrade() -> None:
    """Drop ``studies.accession_hmac`` (rekeyed values are lost: they cannot be un-keyed)."""
    with op.batch_alter_table("studies") as batch:
        batch.drop_index(batch.f("ix_studies_accession_hmac"))
        batch.drop_column("accession_hmac")
