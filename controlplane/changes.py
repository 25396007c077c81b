"""The change counter: one row every registry change bumps in its own transaction.

Gateways poll it (one primary-key read per interval) and reload the registry when it moved, which works the
same on SQLite and PostgreSQL and survives dropped connections (the next poll simply reconnects). On PostgreSQL
the bump also sends ``NOTIFY ragswap_changes`` (delivered at commit), which a listening gateway can use to poll at
once instead of at the next tick.

Bumping first in a write transaction also serialises concurrent control-plane writers on PostgreSQL (the row
lock), so checks such as "this alias name is not an adapter name" cannot race.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from controlplane.clock import db_now
from controlplane.models import ControlState

logger = logging.getLogger(__name__)

CHANNEL = "ragswap_changes"


def bump(session: Session) -> int:
    """Increment the counter in ``session``'s transaction; returns the new change number."""
    change = session.execute(
        update(ControlState)
        .where(ControlState.id == 1)
        .values(change=ControlState.change + 1, updated_at=db_now())
        .returning(ControlState.change)
    ).scalar_one()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": str(change)}
        )
    return int(change)


def current(session: Session) -> int:
    return int(session.scalar(select(ControlState.change).where(ControlState.id == 1)) or 0)


class ChangeListener:
    """Calls ``on_change`` whenever a registry change commits (PostgreSQL ``LISTEN``), from a thread of its own.

    Only a wake-up: the poller still reads the counter, so a notification lost while the connection was down
    costs one poll interval, never a missed change. Reconnects with backoff; :meth:`stop` ends it.
    """

    def __init__(self, url: str, on_change: Callable[[], object]) -> None:
        from sqlalchemy.engine import make_url

        # psycopg wants the libpq form of the URL (no "+psycopg" driver suffix).
        self._dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ragswap-change-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg

        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.5
                    self._on_change()  # changes made while we were not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._on_change()
            except Exception as exc:
                logger.warning("change listener disconnected; polling meanwhile", extra={"error": str(exc)})
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
