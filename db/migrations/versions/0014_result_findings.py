"""A multi-output model's further findings beside each result (issue 22: several findings from
one model).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``result_findings``; results made before have none (single-output models)."""
    op.create_table(
        "result_findings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("finding_scheme", sa.String(16), nullable=False),
        sa.Column("finding_value", sa.String(64), nullable=False),
        sa.Column("finding_meaning", sa.String(128), nullable=False),
        sa.Column("finding_name", sa.String(16), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["result_id"],
            ["results.id"],
            name=op.f("fk_result_findings_result_id_results"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_findings")),
        sa.UniqueConstraint(
            "result_id",
            "finding_scheme",
            "finding_value",
            name=op.f("uq_result_findings_result_id_finding_scheme_finding_value"),
        ),
    )
    op.create_index(
        op.f("ix_result_findings_result_id"), "result_findings", ["result_id"], unique=False
    )


def downgrade() -> None:
    """Drop ``result_findings``."""
    op.drop_index(op.f("ix_result_findings_result_id"), table_name="result_findings")
    op.drop_table("result_findings")
