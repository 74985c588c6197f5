"""Outcomes, shadow results and challenger models (issue 13).

Adds ``results.shadow``; the series attributes watched for drift (manufacturer, kernel, slice
thickness) and the hashed accession number of a study; the tables ``challenger_results``,
``outcomes`` and ``outcome_changes``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the columns and create the tables."""
    with op.batch_alter_table("results") as batch:
        batch.add_column(
            sa.Column("shadow", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("manufacturer", sa.String(64), nullable=True))
        batch.add_column(sa.Column("convolution_kernel", sa.String(64), nullable=True))
        batch.add_column(sa.Column("slice_thickness_mm", sa.Float(), nullable=True))
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("accession_sha256", sa.String(64), nullable=True))
        batch.create_index(batch.f("ix_studies_accession_sha256"), ["accession_sha256"])
    op.create_table(
        "challenger_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("suspected", sa.Boolean(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("input_fingerprint", sa.String(64), nullable=False),
        sa.Column("precision", sa.String(8), nullable=False),
        sa.Column("device", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_challenger_results_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["series.id"],
            name=op.f("fk_challenger_results_series_id_series"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_challenger_results")),
        sa.UniqueConstraint(
            "series_id",
            "input_fingerprint",
            "model_sha256",
            name=op.f("uq_challenger_results_series_id_input_fingerprint_model_sha256"),
        ),
    )
    op.create_index(op.f("ix_challenger_results_job_id"), "challenger_results", ["job_id"])
    op.create_index(op.f("ix_challenger_results_series_id"), "challenger_results", ["series_id"])
    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_kind", sa.String(32), nullable=False),
        sa.Column("key_value", sa.String(64), nullable=False),
        sa.Column("stroke", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcomes")),
        sa.UniqueConstraint("key_kind", "key_value", name=op.f("uq_outcomes_key_kind_key_value")),
    )
    op.create_table(
        "outcome_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outcome_id", sa.Integer(), nullable=False),
        sa.Column("previous_stroke", sa.Boolean(), nullable=False),
        sa.Column("stroke", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["outcome_id"],
            ["outcomes.id"],
            name=op.f("fk_outcome_changes_outcome_id_outcomes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcome_changes")),
    )
    op.create_index(op.f("ix_outcome_changes_outcome_id"), "outcome_changes", ["outcome_id"])


def downgrade() -> None:
    """Drop the tables and the columns."""
    op.drop_index(op.f("ix_outcome_changes_outcome_id"), table_name="outcome_changes")
    op.drop_table("outcome_changes")
    op.drop_table("outcomes")
    op.drop_index(op.f("ix_challenger_results_series_id"), table_name="challenger_results")
    op.drop_index(op.f("ix_challenger_results_job_id"), table_name="challenger_results")
    op.drop_table("challenger_results")
    with op.batch_alter_table("studies") as batch:
        batch.drop_index(batch.f("ix_studies_accession_sha256"))
        batch.drop_column("accession_sha256")
    with op.batch_alter_table("series") as batch:
        batch.drop_column("slice_thickness_mm")
        batch.drop_column("convolution_kernel")
        batch.drop_column("manufacturer")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("shadow")
