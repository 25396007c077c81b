"""Alembic environment of the control plane.

ragswap runs migrations itself (:func:`controlplane.migrate.upgrade`, at every gateway and worker start) on a
connection it has already opened inside one transaction, so a failed migration leaves the database as it was (on
PostgreSQL and on SQLite alike). Developers can also use the ``alembic`` command with
``-x url=sqlite:///path`` (e.g. ``alembic -c controlplane/migrations/alembic.ini -x url=... revision
--autogenerate -m "..."``).
"""

from __future__ import annotations

from alembic import context

from controlplane.models import Base

config = context.config


def _configure(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=Base.metadata,
        transactional_ddl=True,
        render_as_batch=True,  # SQLite cannot ALTER most things: batch mode rebuilds the table instead
        compare_type=True,
    )


connection = config.attributes.get("connection")
if connection is not None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()
else:
    from controlplane.db import Database

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database: alembic -x url=sqlite:///path/controlplane.db ...")
    database = Database(url)
    try:
        with database.engine.begin() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        database.close()
