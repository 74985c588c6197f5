"""Record when a series' stored instances were deleted by the retention policy.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``series.purged_at``."""
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop ``series.purged_at``."""
    with op.batch_alter_table("series") as batch:
        batch.drop_column("purged_at")
