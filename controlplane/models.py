"""The control-plane schema (SQLAlchemy 2 ORM). Alembic migrations in ``controlplane/migrations`` create it.

Times are seconds since the epoch (double precision) taken from the *database's* clock
(:func:`controlplane.clock.db_now`), so leases and heartbeats mean the same on every gateway and worker whatever
their own clocks say.

Registry:
    ``adapters`` (one row per name) → ``adapter_versions`` (``name@version``; ids from the ``id_sequences`` row
    ``adapter_version``, never reused, including ids of removed versions) ← ``alias_targets`` (alias → versions,
    each with a weight; today's API exposes exactly one target at weight 100, weighted and canary routing add
    rows, not columns) → ``aliases``. ``registry_events`` is append-only history (who, when, what).
    ``pending_unloads`` lists removed versions an engine may still hold until every gateway drained them.
Coordination:
    ``control_state`` (one row: the change counter every gateway polls), ``gateway_instances`` (heartbeat, the
    change each gateway applied, what it still has in flight), ``engine_replicas`` (what each engine was last
    reconciled to, by whom), ``control_locks`` (lock leases where the database has no advisory locks: SQLite).
Evaluations:
    ``eval_jobs`` (the queue: status, lease, progress, summary) and ``eval_traces`` (one row per job × config ×
    sample; the unique key makes "a sample is scored twice" impossible).
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSONValue = JSON().with_variant(JSONB(), "postgresql")
"""JSON on SQLite, JSONB on PostgreSQL."""

AutoId = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit key that is still SQLite's rowid alias (so it autoincrements there)."""

# Deterministic constraint names: Alembic can then drop and alter them (SQLite batch mode needs names too).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONValue,
        list[Any]: JSONValue,
        float: Double(),
    }


# ---- coordination ------------------------------------------------------------------------------------------


class ControlState(Base):
    """The single change counter: every registry change bumps it in the same transaction."""

    __tablename__ = "control_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    change: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[float]


class ControlMeta(Base):
    """Key → JSON facts about this database (e.g. which legacy state dir was imported, and when)."""

    __tablename__ = "control_meta"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[dict[str, Any]]


class IdSequence(Base):
    """Portable id counters (allocated in the writing transaction, never handed out twice)."""

    __tablename__ = "id_sequences"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
    """The last id handed out."""


class ControlLock(Base):
    """A named lock lease (SQLite's stand-in for PostgreSQL advisory locks)."""

    __tablename__ = "control_locks"

    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    holder: Mapped[str] = mapped_column(String(256))
    expires_at: Mapped[float]


class GatewayInstance(Base):
    """One running gateway process."""

    __tablename__ = "gateway_instances"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int]
    url: Mapped[str | None] = mapped_column(String(512))
    started_at: Mapped[float]
    heartbeat_at: Mapped[float] = mapped_column(index=True)
    applied_change: Mapped[int] = mapped_column(BigInteger, default=0)
    """The registry change this gateway routes by."""
    busy: Mapped[list[Any]] = mapped_column(default=list)
    """Engine adapter names it has requests in flight on that are no longer registered (being drained)."""


class EngineReplica(Base):
    """What an engine replica was last reconciled to (observability; the engine's ``/v1/models`` is the truth)."""

    __tablename__ = "engine_replicas"

    url: Mapped[str] = mapped_column(String(512), primary_key=True)
    reconciled_change: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[list[Any]] = mapped_column(default=list)
    reconciled_at: Mapped[float]
    reconciled_by: Mapped[str] = mapped_column(String(128))
    loads: Mapped[int] = mapped_column(default=0)
    """Adapter loads done by reconciliation (not by registration) since the row was created."""
    unloads: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


# ---- registry ----------------------------------------------------------------------------------------------


class Adapter(Base):
    __tablename__ = "adapters"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float]
    versions: Mapped[list[AdapterVersionRow]] = relationship(
        back_populates="adapter", order_by="AdapterVersionRow.version"
    )


class AdapterVersionRow(Base):
    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("adapter_id", "version"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id", ondelete="RESTRICT"))
    version: Mapped[int]
    path: Mapped[str] = mapped_column(Text)
    rank: Mapped[int]
    target_modules: Mapped[list[Any]]
    base_check: Mapped[str] = mapped_column(String(32))
    default_collection: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """What validation learned beyond the columns (e.g. ``alpha``)."""
    created_at: Mapped[float]
    created_by: Mapped[str | None] = mapped_column(String(64))
    adapter: Mapped[Adapter] = relationship(back_populates="versions")


class Alias(Base):
    __tablename__ = "aliases"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    default_collection: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[float]
    updated_by: Mapped[str | None] = mapped_column(String(64))
    targets: Mapped[list[AliasTarget]] = relationship(
        cascade="all, delete-orphan", order_by="AliasTarget.weight.desc()", lazy="selectin"
    )
    shadow: Mapped[AliasShadow | None] = relationship(cascade="all, delete-orphan", lazy="selectin")


class AliasTarget(Base):
    __tablename__ = "alias_targets"

    alias_id: Mapped[int] = mapped_column(ForeignKey("aliases.id", ondelete="CASCADE"), primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("adapter_versions.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    weight: Mapped[int] = mapped_column(default=100)
    """Share of the alias's traffic in percent (today always one target at 100)."""


class AliasShadow(Base):
    """A candidate version that sees a copy of a share of an alias's chat traffic; its answers go to the
    shadow capture, never to the user. Removing the version removes the shadow."""

    __tablename__ = "alias_shadows"

    alias_id: Mapped[int] = mapped_column(ForeignKey("aliases.id", ondelete="CASCADE"), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id", ondelete="CASCADE"), index=True)
    percent: Mapped[int]
    """Share of the alias's chat requests mirrored to the candidate, 1..100."""
    updated_at: Mapped[float]
    updated_by: Mapped[str | None] = mapped_column(String(64))


class RegistryEvent(Base):
    """Append-only history of registry changes."""

    __tablename__ = "registry_events"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    at: Mapped[float]
    change: Mapped[int] = mapped_column(BigInteger, index=True)
    actor: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    """``adapter.registered``, ``adapter.removed``, ``alias.set``, ``alias.deleted``, ``registry.imported``."""
    subject: Mapped[str] = mapped_column(String(200), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class PendingUnload(Base):
    """A removed version an engine may still hold: unloaded once no gateway has requests in flight on it."""

    __tablename__ = "pending_unloads"

    engine_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    change: Mapped[int] = mapped_column(BigInteger)
    """The registry change that removed it; a gateway that applied it no longer routes new requests there."""
    requested_at: Mapped[float]


# ---- evaluations -------------------------------------------------------------------------------------------


class EvalJob(Base):
    __tablename__ = "eval_jobs"
    __table_args__ = (Index("ix_eval_jobs_status_created", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    """``queued``, ``running``, ``succeeded``, ``failed`` or ``cancelled``."""
    name: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]]
    """The evaluation request as ``eval`` defines it (samples, configs, metrics, judge)."""
    configs: Mapped[list[Any]]
    metrics: Mapped[list[Any]]
    done: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[float] = mapped_column(index=True)
    created_by: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[float | None]
    finished_at: Mapped[float | None]
    attempts: Mapped[int] = mapped_column(default=0)
    """How often a worker claimed it."""
    resumed: Mapped[int] = mapped_column(default=0)
    """How often it was picked up again after an interruption (a worker died or stopped)."""
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(256))
    """The worker holding (or that last held) the lease."""
    lease_expires_at: Mapped[float | None]
    heartbeat_at: Mapped[float | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    summary: Mapped[dict[str, Any] | None]
    """``RunSummary`` as ``eval`` writes it (its fields may grow; stored as given)."""


class EvalTrace(Base):
    __tablename__ = "eval_traces"
    __table_args__ = (UniqueConstraint("job_id", "config", "sample_id"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("eval_jobs.id", ondelete="CASCADE"))
    config: Mapped[str] = mapped_column(String(300))
    sample_id: Mapped[str] = mapped_column(String(300))
    trace: Mapped[dict[str, Any]]
    worker: Mapped[str | None] = mapped_column(String(256))
    attempt: Mapped[int] = mapped_column(default=0)
    """The job's attempt number when the trace was written."""
    created_at: Mapped[float]
