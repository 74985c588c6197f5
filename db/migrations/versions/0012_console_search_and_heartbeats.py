"""The console's search index (series headers, keyed hashes of identifiers) and heartbeats.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _series_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["series_id"],
        ["series.id"],
        name=op.f(f"fk_{table}_series_id_series"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    """Create ``series_headers``, ``series_search_terms`` and ``heartbeats``."""
    op.create_table(
        "series_headers",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("station_name", sa.String(64), nullable=True),
        sa.Column("read_ok", sa.Boolean(), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        _series_fk("series_headers"),
        sa.PrimaryKeyConstraint("series_id", name=op.f("pk_series_headers")),
    )
    op.create_index(op.f("ix_series_headers_station_name"), "series_headers", ["station_name"])
    op.create_table(
        "series_search_terms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("term_hmac", sa.String(64), nullable=False),
        _series_fk("series_search_terms"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_series_search_terms")),
        sa.UniqueConstraint(
            "series_id",
            "kind",
            "term_hmac",
            name=op.f("uq_series_search_terms_series_id_kind_term_hmac"),
        ),
    )
    op.create_index(op.f("ix_series_search_terms_series_id"), "series_search_terms", ["series_id"])
    op.create_index(op.f("ix_series_search_terms_term_hmac"), "series_search_terms", ["term_hmac"])
    op.create_table(
        "heartbeats",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_heartbeats")),
        sa.UniqueConstraint("kind", "name", name=op.f("uq_heartbeats_kind_name")),
    )
    op.create_index(op.f("ix_heartbeats_seen_at"), "heartbeats", ["seen_at"])


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_index(op.f("ix_heartbeats_seen_at"), table_name="heartbeats")
    op.drop_table("heartbeats")
    op.drop_index(op.f("ix_series_search_terms_term_hmac"), table_name="series_search_terms")
    op.drop_index(op.f("ix_series_search_terms_series_id"), table_name="series_search_terms")
    op.drop_table("series_search_terms")
    op.drop_index(op.f("ix_series_headers_station_name"), table_name="series_headers")
    op.drop_table("series_headers")
