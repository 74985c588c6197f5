"""Each export records the sha256 and size of the file the worker wrote, so that a file changed
or truncated since is never sent as if it were the report.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``sha256`` and ``size_bytes`` to ``exports``; rows made before have neither (their
    files are checked only for being the DICOM object they are named after)."""
    with op.batch_alter_table("exports") as batch:
        batch.add_column(sa.Column("sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("size_bytes", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("exports") as batch:
        batch.drop_column("size_bytes")
        batch.drop_column("sha256")
