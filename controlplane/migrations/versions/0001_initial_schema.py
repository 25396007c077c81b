"""Initial control-plane schema: registry, coordination, evaluation queue.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME: sa.Double[float] = sa.Double()


def upgrade() -> None:
    control_state = op.create_table(
        "control_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("change", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_control_state")),
    )
    op.create_table(
        "control_meta",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", JSON, nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_control_meta")),
    )
    id_sequences = op.create_table(
        "id_sequences",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_id_sequences")),
    )
    op.create_table(
        "control_locks",
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("holder", sa.String(length=256), nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_control_locks")),
    )
    op.create_table(
        "gateway_instances",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=256), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=512), nullable=True),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("heartbeat_at", TIME, nullable=False),
        sa.Column("applied_change", sa.BigInteger(), nullable=False),
        sa.Column("busy", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_instances")),
    )
    op.create_index(op.f("ix_gateway_instances_heartbeat_at"), "gateway_instances", ["heartbeat_at"])
    op.create_table(
        "engine_replicas",
        sa.Column("url", sa.String(length=512), nullable=False),
        sa.Column("reconciled_change", sa.BigInteger(), nullable=False),
        sa.Column("held", JSON, nullable=False),
        sa.Column("reconciled_at", TIME, nullable=False),
        sa.Column("reconciled_by", sa.String(length=128), nullable=False),
        sa.Column("loads", sa.Integer(), nullable=False),
        sa.Column("unloads", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("url", name=op.f("pk_engine_replicas")),
    )

    # ---- registry ----
    op.create_table(
        "adapters",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adapters")),
        sa.UniqueConstraint("name", name=op.f("uq_adapters_name")),
    )
    op.create_table(
        "adapter_versions",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("adapter_id", AUTO_ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("target_modules", JSON, nullable=False),
        sa.Column("base_check", sa.String(length=32), nullable=False),
        sa.Column("default_collection", sa.String(length=128), nullable=True),
        sa.Column("details", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["adapter_id"],
            ["adapters.id"],
            name=op.f("fk_adapter_versions_adapter_id_adapters"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adapter_versions")),
        sa.UniqueConstraint("adapter_id", "version", name=op.f("uq_adapter_versions_adapter_id_version")),
    )
    op.create_table(
        "aliases",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("default_collection", sa.String(length=128), nullable=True),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aliases")),
        sa.UniqueConstraint("name", name=op.f("uq_aliases_name")),
    )
    op.create_table(
        "alias_targets",
        sa.Column("alias_id", AUTO_ID, nullable=False),
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["alias_id"], ["aliases.id"], name=op.f("fk_alias_targets_alias_id_aliases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_alias_targets_version_id_adapter_versions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("alias_id", "version_id", name=op.f("pk_alias_targets")),
    )
    op.create_index(op.f("ix_alias_targets_version_id"), "alias_targets", ["version_id"])
    op.create_table(
        "registry_events",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("change", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_events")),
    )
    op.create_index(op.f("ix_registry_events_change"), "registry_events", ["change"])
    op.create_index(op.f("ix_registry_events_subject"), "registry_events", ["subject"])
    op.create_table(
        "pending_unloads",
        sa.Column("engine_name", sa.String(length=200), nullable=False),
        sa.Column("change", sa.BigInteger(), nullable=False),
        sa.Column("requested_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("engine_name", name=op.f("pk_pending_unloads")),
    )

    # ---- evaluations ----
    op.create_table(
        "eval_jobs",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("request", JSON, nullable=False),
        sa.Column("configs", JSON, nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("resumed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=256), nullable=True),
        sa.Column("lease_expires_at", TIME, nullable=True),
        sa.Column("heartbeat_at", TIME, nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("summary", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_jobs")),
    )
    op.create_index(op.f("ix_eval_jobs_created_at"), "eval_jobs", ["created_at"])
    op.create_index("ix_eval_jobs_status_created", "eval_jobs", ["status", "created_at"])
    op.create_table(
        "eval_traces",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=100), nullable=False),
        sa.Column("config", sa.String(length=300), nullable=False),
        sa.Column("sample_id", sa.String(length=300), nullable=False),
        sa.Column("trace", JSON, nullable=False),
        sa.Column("worker", sa.String(length=256), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["eval_jobs.id"], name=op.f("fk_eval_traces_job_id_eval_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_traces")),
        sa.UniqueConstraint(
            "job_id", "config", "sample_id", name=op.f("uq_eval_traces_job_id_config_sample_id")
        ),
    )

    op.bulk_insert(control_state, [{"id": 1, "change": 0, "updated_at": 0.0}])
    op.bulk_insert(id_sequences, [{"name": "adapter_version", "value": 0}])


def downgrade() -> None:
    for table in (
        "eval_traces",
        "eval_jobs",
        "pending_unloads",
        "registry_events",
        "alias_targets",
        "aliases",
        "adapter_versions",
        "adapters",
        "engine_replicas",
        "gateway_instances",
        "control_locks",
        "id_sequences",
        "control_meta",
        "control_state",
    ):
        op.drop_table(table)
