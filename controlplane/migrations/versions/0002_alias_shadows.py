"""Shadow traffic: an alias may mirror a share of its chat requests to a candidate version.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME: sa.Double[float] = sa.Double()


def upgrade() -> None:
    op.create_table(
        "alias_shadows",
        sa.Column("alias_id", AUTO_ID, nullable=False),
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["alias_id"], ["aliases.id"], name=op.f("fk_alias_shadows_alias_id_aliases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_alias_shadows_version_id_adapter_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("alias_id", name=op.f("pk_alias_shadows")),
    )
    op.create_index(op.f("ix_alias_shadows_version_id"), "alias_shadows", ["version_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_alias_shadows_version_id"), table_name="alias_shadows")
    op.drop_table("alias_shadows")
