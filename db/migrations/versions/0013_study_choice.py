"""One series per study (issue 26): each series' facts and its place in its study's choice, the
report a result revises, and the result's preview image.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERIES_COLUMNS = (
    ("series_number", sa.Integer()),
    ("axial_slices", sa.Integer()),
    ("coverage_mm", sa.Float()),
    ("derived", sa.Boolean()),
    ("choice", sa.String(16)),
    ("choice_reason", sa.Text()),
)


def upgrade() -> None:
    """Add the choice's columns to ``series``, and ``replaces_result_id`` and ``preview_path``
    to ``results``. Rows made before stay unjudged (``choice`` NULL)."""
    with op.batch_alter_table("series") as batch:
        for name, type_ in SERIES_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("replaces_result_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("preview_path", sa.String(1024), nullable=True))
        batch.create_foreign_key(
            op.f("fk_results_replaces_result_id_results"),
            "results",
            ["replaces_result_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("results") as batch:
        batch.drop_constraint(op.f("fk_results_replaces_result_id_results"), type_="foreignkey")
        batch.drop_column("preview_path")
        batch.drop_column("replaces_result_id")
    with op.batch_alter_table("series") as batch:
        for name, _ in reversed(SERIES_COLUMNS):
            batch.drop_column(name)
