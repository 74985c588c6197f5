"""Initial schema: studies, series, instances, jobs, results, slice scores and exports.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Enum columns are plain VARCHARs (no native PostgreSQL enums) so that adding a state later is a
one-line model change, not a type migration.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UID = 64


def _timestamp(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _fk(column: str, table: str, referred: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{referred}.id"],
        name=op.f(f"fk_{table}_{column}_{referred}"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    """Create every table."""
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(UID), nullable=False),
        _timestamp("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint("study_instance_uid", name=op.f("uq_studies_study_instance_uid")),
    )
    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", sa.String(UID), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("series_description", sa.String(64), nullable=True),
        sa.Column("calling_ae_title", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        _timestamp("first_received_at", nullable=False),
        _timestamp("last_received_at", nullable=False),
        _timestamp("completed_at", nullable=True),
        _fk("study_id", "series", "studies"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_series")),
        sa.UniqueConstraint("series_instance_uid", name=op.f("uq_series_series_instance_uid")),
    )
    op.create_index(op.f("ix_series_status"), "series", ["status"])
    op.create_index(op.f("ix_series_study_id"), "series", ["study_id"])
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(UID), nullable=False),
        sa.Column("sop_class_uid", sa.String(UID), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(UID), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        _timestamp("received_at", nullable=False),
        _fk("series_id", "instances", "series"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_instances_sop_instance_uid")),
    )
    op.create_index(op.f("ix_instances_series_id"), "instances", ["series_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=True),
        _timestamp("received_at", nullable=True),
        _timestamp("completed_at", nullable=True),
        _timestamp("queued_at", nullable=True),
        _timestamp("started_at", nullable=True),
        _timestamp("inferred_at", nullable=True),
        _timestamp("exported_at", nullable=True),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        _fk("series_id", "jobs", "series"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(op.f("ix_jobs_series_id"), "jobs", ["series_id"])
    op.create_index(op.f("ix_jobs_status"), "jobs", ["status"])
    op.create_table(
        "results",
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
        _timestamp("created_at", nullable=False),
        sa.Column("superseded", sa.Boolean(), nullable=False),
        _fk("job_id", "results", "jobs"),
        _fk("series_id", "results", "series"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_results")),
        sa.UniqueConstraint("job_id", name=op.f("uq_results_job_id")),
        sa.UniqueConstraint(
            "series_id",
            "input_fingerprint",
            "model_sha256",
            name=op.f("uq_results_series_id_input_fingerprint_model_sha256"),
        ),
    )
    op.create_index(op.f("ix_results_series_id"), "results", ["series_id"])
    op.create_table(
        "slice_scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(UID), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        _fk("result_id", "slice_scores", "results"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slice_scores")),
    )
    op.create_index(op.f("ix_slice_scores_result_id"), "slice_scores", ["result_id"])
    op.create_table(
        "exports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("destination", sa.String(128), nullable=False),
        sa.Column("sop_instance_uid", sa.String(UID), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        _timestamp("next_attempt_at", nullable=True),
        _timestamp("created_at", nullable=False),
        _timestamp("updated_at", nullable=False),
        _timestamp("sent_at", nullable=True),
        _fk("result_id", "exports", "results"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exports")),
        sa.UniqueConstraint(
            "result_id", "kind", "destination", name=op.f("uq_exports_result_id_kind_destination")
        ),
    )
    op.create_index(op.f("ix_exports_status"), "exports", ["status"])


def downgrade() -> None:
    """Drop every table."""
    for table in ("exports", "slice_scores", "results", "jobs", "instances", "series", "studies"):
        op.drop_table(table)
