"""Migrations on SQLite and PostgreSQL: the shipped revisions build exactly the ORM schema, re-running is a no-op,
concurrent starts are serialised, and a revision that fails half-way leaves the database as it was."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from controlplane import Database, MigrationError, current_revision, head_revision, upgrade
from controlplane.models import Base

FAILING_REVISION = '''
"""A revision that creates a table, changes a row, then fails."""
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.add_column("eval_jobs", sa.Column("half_done_flag", sa.Integer, nullable=True))
    op.execute("UPDATE control_state SET change = 999")
    op.execute("SELECT * FROM a_table_that_does_not_exist")


def downgrade():
    pass
'''


def test_upgrade_builds_the_orm_schema_and_is_idempotent(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert current_revision(db) is None
        assert upgrade(db) == head_revision()
        with db.engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == []  # migrations and models describe the same schema
        assert upgrade(db) == head_revision()  # nothing pending: no-op
        with db.read() as session:
            assert session.execute(text("SELECT change FROM control_state WHERE id = 1")).scalar() == 0
    finally:
        db.close()


def test_concurrent_upgrades_are_serialised(db_url: str) -> None:
    """Two gateways starting at once on an empty database: one migrates, the other finds it done."""
    results: list[object] = []

    def start() -> None:
        db = Database(db_url)
        try:
            results.append(upgrade(db))
        except Exception as exc:
            results.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [head_revision()] * 3


def test_failed_migration_leaves_the_database_as_it_was(db_url: str, tmp_path: Path) -> None:
    db = Database(db_url)
    try:
        head = upgrade(db)
        with db.write() as session:
            session.execute(text("UPDATE control_state SET change = 41 WHERE id = 1"))
        tables_before = set(inspect(db.engine).get_table_names())
        columns_before = {c["name"] for c in inspect(db.engine).get_columns("eval_jobs")}

        extra = tmp_path / "versions"
        extra.mkdir()
        (extra / "9001_failing.py").write_text(FAILING_REVISION.format(head=head))
        with pytest.raises(MigrationError) as info:
            upgrade(db, extra_locations=[extra])
        assert "rolled back" in info.value.message and info.value.code == "migration_failed"

        db.engine.dispose()  # fresh connections: see what is committed
        assert current_revision(db) == head
        assert set(inspect(db.engine).get_table_names()) == tables_before  # no half_done table
        assert {c["name"] for c in inspect(db.engine).get_columns("eval_jobs")} == columns_before
        with db.read() as session:
            assert session.execute(text("SELECT change FROM control_state WHERE id = 1")).scalar() == 41
    finally:
        db.close()


def test_database_newer_than_the_code_is_refused(db_url: str) -> None:
    db = Database(db_url)
    try:
        upgrade(db)
        with db.write() as session:
            session.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
        with pytest.raises(MigrationError) as info:
            upgrade(db)
        assert info.value.code == "database_too_new" and "upgrade ragswap" in info.value.message
    finally:
        db.close()
