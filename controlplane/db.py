"""The control-plane database: one SQLAlchemy engine for SQLite (embedded default) or PostgreSQL (replicas).

SQLite is opened in WAL mode with a busy timeout, and every transaction really is one: pysqlite's own transaction
handling (which issues no ``BEGIN`` before DDL) is switched off and ``BEGIN`` / ``BEGIN IMMEDIATE`` emitted here,
so migrations are transactional and writers take the write lock up front instead of failing half-way with
``database is locked``. PostgreSQL goes through psycopg 3 with pre-ping, so a restarted server or a dropped
connection costs one retry, not an error.

Writes go through :meth:`Database.write`: on PostgreSQL every write transaction starts by bumping the change
counter row (see :mod:`controlplane.changes`), which serialises control-plane writers without table locks; on
SQLite ``BEGIN IMMEDIATE`` does the same.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from controlplane.errors import DatabaseUnavailableError

logger = logging.getLogger(__name__)

DB_FILE = "controlplane.db"
"""The embedded database's file name inside ``server.state_dir``."""

_WRITE = "ragswap_write"
"""Execution option marking a write transaction (``BEGIN IMMEDIATE`` on SQLite)."""


def default_url(state_dir: Path) -> str:
    """The embedded default: an SQLite file in the state dir."""
    return f"sqlite:///{(state_dir / DB_FILE).expanduser().absolute()}"


def normalise_url(url: str) -> URL:
    """``postgres://`` / ``postgresql://`` → the psycopg 3 driver; SQLite and explicit drivers stay as given.

    Raises:
        ValueError: not an SQLite or PostgreSQL URL.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgres":
        parsed = parsed.set(drivername="postgresql")
        backend = "postgresql"
    if backend == "postgresql" and "+" not in parsed.drivername:
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(
            f"server.database_url: only sqlite:/// and postgresql:// are supported, not {backend}"
        )
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError(
            "server.database_url: an in-memory SQLite database cannot be shared; give a file path"
        )
    return parsed


def safe_url(url: URL | str) -> str:
    """The URL with its password masked, for logs and error messages."""
    return (make_url(url) if isinstance(url, str) else url).render_as_string(hide_password=True)


class Database:
    """An engine plus session factories; one per process (the gateway, a worker), closed with :meth:`close`.

    Example:
        >>> db = Database("sqlite:////var/lib/ragswap/state/controlplane.db")
        >>> with db.write() as session:
        ...     session.add(row)
        >>> with db.read() as session:
        ...     session.scalars(select(Model)).all()
    """

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = normalise_url(url)
        self.dialect = self.url.get_backend_name()
        self.engine = self._create_engine(pool_size)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(**{_WRITE: True}), expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def __repr__(self) -> str:
        return f"Database({safe_url(self.url)!r})"

    def _create_engine(self, pool_size: int) -> Engine:
        if self.dialect == "sqlite":
            assert self.url.database
            Path(self.url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                self.url,
                connect_args={"timeout": 30.0, "check_same_thread": False},
                pool_size=pool_size,
                max_overflow=pool_size,
            )
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
            return engine
        return create_engine(
            self.url,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=2 * pool_size,
            pool_recycle=1800,
            connect_args={"connect_timeout": 10, "application_name": f"ragswap@{socket.gethostname()}"},
        )

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (a consistent snapshot: REPEATABLE READ on PostgreSQL, WAL on SQLite)."""
        with self.guard(), self._read() as session, session.begin():
            if self.is_postgres:
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed when the block ends, rolled back (nothing written) if it raises."""
        with self.guard(), self._write() as session, session.begin():
            yield session

    @contextmanager
    def guard(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            raise DatabaseUnavailableError(
                f"control-plane database {safe_url(self.url)} unavailable: {_reason(exc)}"
            ) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise DatabaseUnavailableError(
                    f"control-plane database {safe_url(self.url)} connection lost: {_reason(exc)}"
                ) from exc
            raise

    def ping(self) -> None:
        """Raise :class:`DatabaseUnavailableError` unless a trivial query succeeds."""
        with self.read() as session:
            session.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()


def _reason(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)


def _sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's events emit BEGIN (pysqlite would skip it before DDL, breaking transactional migrations).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=30000")
        # Switching a new database file to WAL answers "database is locked" at once, without waiting for the busy
        # timeout, while another connection is creating it (seen: three gateways starting on one empty file).
        for attempt in range(100):
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 99:
                    raise
                time.sleep(0.05)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    immediate = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
