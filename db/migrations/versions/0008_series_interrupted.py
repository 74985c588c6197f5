"""Record when a series' delivery was last interrupted (issue 16: abort on any receiving process).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``series.interrupted_at``."""
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("interrupted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop ``series.interrupted_at``."""
    with op.batch_alter_table("series") as batch:
        batch.drop_column("interrupted_at")
