"""A multi-output challenger's further findings beside its verdict, as the live result's.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "challenger_result_findings"


def upgrade() -> None:
    """Create ``challenger_result_findings``; challenger verdicts made before have none."""
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("challenger_result_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("finding_scheme", sa.String(16), nullable=False),
        sa.Column("finding_value", sa.String(64), nullable=False),
        sa.Column("finding_meaning", sa.String(128), nullable=False),
        sa.Column("finding_name", sa.String(16), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["challenger_result_id"],
            ["challenger_results.id"],
            name=op.f("fk_challenger_result_findings_challenger_result_id_challenger_results"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_challenger_result_findings")),
        sa.UniqueConstraint(
            "challenger_result_id",
            "finding_scheme",
            "finding_value",
            name=op.f(
                "uq_challenger_result_findings_challenger_result_id_finding_scheme_finding_value"
            ),
        ),
    )
    op.create_index(
        op.f("ix_challenger_result_findings_challenger_result_id"),
        TABLE,
        ["challenger_result_id"],
        unique=False,
    )


def downgrade() -> None:
    """Drop ``challenger_result_findings``."""
    op.drop_index(op.f("ix_challenger_result_findings_challenger_result_id"), table_name=TABLE)
    op.drop_table(TABLE)
