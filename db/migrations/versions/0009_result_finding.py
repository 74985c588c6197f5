"""Record what the model detects with each result (issue 22: the finding travels with the weights).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (column, type, the value rows made before this revision get: the old checkpoints' finding)
COLUMNS = (
    ("finding_scheme", sa.String(16), "SCT"),
    ("finding_value", sa.String(64), "230690007"),
    ("finding_meaning", sa.String(128), "Cerebrovascular accident or stroke"),
    ("finding_name", sa.String(16), "stroke"),
)


def upgrade() -> None:
    """Add the finding's code to ``results`` and ``challenger_results``."""
    for table in ("results", "challenger_results"):
        with op.batch_alter_table(table) as batch:
            for name, type_, default in COLUMNS:
                # A plain constant default: SQLite then adds the column in place (ALTER TABLE
                # ADD COLUMN) instead of copying the table.
                batch.add_column(sa.Column(name, type_, nullable=False, server_default=default))


def downgrade() -> None:
    """Drop the finding's code."""
    for table in ("results", "challenger_results"):
        with op.batch_alter_table(table) as batch:
            for name, _, _ in COLUMNS:
                batch.drop_column(name)
