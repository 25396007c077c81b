"""``db_now()``: the database server's clock in epoch seconds, as a SQL expression.

Leases and heartbeats compare times written by different machines; taking them all from the database's clock
makes expiry independent of how well each gateway's or worker's clock is set.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Double, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement


class db_now(FunctionElement[float]):  # noqa: N801 (reads like the SQL function it renders)
    """Seconds since the epoch, from the database server (sub-millisecond resolution on both dialects)."""

    type = Double()
    inherit_cache = True


@compiles(db_now, "postgresql")
def _now_postgresql(element: db_now, compiler: Any, **kw: Any) -> str:
    # clock_timestamp(), not now(): the time of the statement, not of the transaction's start.
    return "extract(epoch from clock_timestamp())::double precision"


@compiles(db_now, "sqlite")
def _now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


def read_now(session: Session) -> float:
    """The database's time now, within ``session``'s transaction."""
    value = session.scalar(select(db_now()))
    assert value is not None
    return float(value)


def iso(ts: float) -> str:
    """Epoch seconds → ISO 8601 (UTC, whole seconds), the API's timestamp format."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
