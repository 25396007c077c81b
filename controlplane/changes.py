"""The change counter: one row every registry change bumps in its own transaction.

Gateways poll it (one primary-key read per interval) and reload the registry when it moved, which works the
same on SQLite and PostgreSQL and survives dropped connections (the next poll simply reconnects). On PostgreSQL
the bump also sends ``NOTIFY ragswap_changes`` (delivered at commit), which a listening gateway can use to poll at
once instead of at the next tick.

Bumping first in a write transaction also serialises concurrent control-plane writers on PostgreSQL (the row
lock), so checks such as "this alias name is not an adapter name" cannot race.
"""

from __future__ import annotations

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from controlplane.clock import db_now
from controlplane.models import ControlState

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
