"""A result must say what its model found: the finding columns lose their database default.

Revision 0009 added the finding's code with the old checkpoints' finding (stroke, SCT 230690007)
as a server default, so that the rows made before it got one. Kept, that default would let a
row written without a finding read "stroke" silently; without it, such a write fails.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (column, type, the default revision 0009 gave it)
COLUMNS = (
    ("finding_scheme", sa.String(16), "SCT"),
    ("finding_value", sa.String(64), "230690007"),
    ("finding_meaning", sa.String(128), "Cerebrovascular accident or stroke"),
    ("finding_name", sa.String(16), "stroke"),
)
TABLES = ("results", "challenger_results")


def upgrade() -> None:
    """Drop the server default of the finding columns (existing rows keep their values)."""
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            for name, type_, _ in COLUMNS:
                batch.alter_column(
                    name, existing_type=type_, existing_nullable=False, server_default=None
                )


def downgrade() -> None:
    """Give the finding columns their stroke default back."""
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            for name, type_, default in COLUMNS:
                batch.alter_column(
                    name, existing_type=type_, existing_nullable=False, server_default=default
                )
