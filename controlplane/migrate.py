"""Bring the database schema to this code's head revision, programmatically, at start.

All pending revisions run in **one** transaction on a connection opened here: on PostgreSQL (transactional DDL)
and on SQLite (a real ``BEGIN IMMEDIATE``, see :mod:`controlplane.db`) a revision that fails rolls back every
statement of the upgrade, so the database is exactly as it was. Concurrent starts (two gateways, a worker) are
serialised: PostgreSQL by a transaction-level advisory lock, SQLite by its write lock; the second one finds the
schema current and does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from controlplane.db import Database, safe_url
from controlplane.errors import MigrationError
from controlplane.locks import lock_key

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = lock_key("ragswap:controlplane:migrations")


def alembic_config(extra_locations: Sequence[Path] = ()) -> Config:
    """Alembic's configuration for the shipped migrations (plus ``extra_locations``, used by tests)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    locations = [MIGRATIONS / "versions", *extra_locations]
    config.set_main_option("version_locations", ":".join(str(p) for p in locations))
    return config


def head_revision(extra_locations: Sequence[Path] = ()) -> str:
    head = ScriptDirectory.from_config(alembic_config(extra_locations)).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    """The revision the database is at (``None``: no schema yet)."""
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head", *, extra_locations: Sequence[Path] = ()) -> str | None:
    """Apply pending migrations up to ``revision`` in one transaction; returns the revision now current.

    Raises:
        MigrationError: a migration failed (the database is unchanged) or the database is newer than this code.
        DatabaseUnavailableError: the database cannot be reached.
    """
    config = alembic_config(extra_locations)
    script = ScriptDirectory.from_config(config)
    db.ping()  # unreachable → DatabaseUnavailableError, before anything is attempted
    before: str | None = None
    try:
        with db.engine.execution_options(ragswap_write=True).begin() as conn:
            if db.is_postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            before = MigrationContext.configure(conn).get_current_revision()
            if before is not None and before not in {s.revision for s in script.walk_revisions()}:
                raise MigrationError(
                    f"the control-plane database {safe_url(db.url)} is at revision {before}, which this version "
                    "of ragswap does not know (a newer ragswap migrated it): upgrade ragswap",
                    code="database_too_new",
                )
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            after = MigrationContext.configure(conn).get_current_revision()
    except MigrationError:
        raise
    except Exception as exc:
        raise MigrationError(
            f"migrating the control-plane database {safe_url(db.url)} from {before or 'empty'} failed and was "
            f"rolled back: {type(exc).__name__}: {exc}",
            code="migration_failed",
        ) from exc
    if after != before:
        logger.info(
            "control-plane schema migrated", extra={"from": before, "to": after, "database": safe_url(db.url)}
        )
    return after
