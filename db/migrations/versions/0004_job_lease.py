"""Worker leases on jobs and job flags (issue 11).

A queued or started job holds a lease (``jobs.lease_expires_at``) that its worker renews
(``jobs.heartbeat_at``); the reconciler publishes a job again once its lease has expired. The
new job state ``export_failed`` needs no schema change (states are plain strings).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``jobs.lease_expires_at`` and ``jobs.heartbeat_at``."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop the lease columns; ``export_failed`` jobs become ``inferred`` again."""
    op.execute("UPDATE jobs SET status = 'inferred' WHERE status = 'export_failed'")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("lease_expires_at")
