"""Named exclusive locks shared by every gateway and worker on one database.

PostgreSQL: session-level advisory locks (``pg_try_advisory_lock``) on a connection held for the lock's lifetime;
when the holder dies its connection closes and the server releases the lock at once. SQLite (one host): lease
rows in ``control_locks`` with an expiry; a lease whose holder process on this host is gone is taken over
immediately, any other one when it expires.

Locks are exclusive between *holders*, not re-entrant: two tasks of one process asking for the same name exclude
each other too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select

from controlplane.clock import db_now
from controlplane.db import Database
from controlplane.models import ControlLock

logger = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for PostgreSQL's advisory locks."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def instance_id(kind: str) -> str:
    """``kind:host:pid:random``: unique per process, and says where the process lives."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LockTimeoutError(TimeoutError):
    """The lock stayed held by someone else for longer than the caller was willing to wait."""


@dataclass
class LockHandle:
    """A held lock; :meth:`release` is idempotent and never raises."""

    name: str
    _release: Callable[[], None] = field(repr=False)
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            self._release()
        except Exception as exc:  # the lock dies with the connection or the lease anyway
            logger.warning("releasing a lock failed", extra={"lock": self.name, "error": str(exc)})


class Locks:
    """Try or wait for named locks on ``db`` as ``holder`` (see :func:`instance_id`)."""

    def __init__(self, db: Database, holder: str, *, lease_s: float = 300.0) -> None:
        self.db = db
        self.holder = holder
        self.lease_s = lease_s
        self._host = socket.gethostname()

    def try_acquire(self, name: str) -> LockHandle | None:
        """The lock if it is free now, else ``None`` (never waits)."""
        return self._try_postgres(name) if self.db.is_postgres else self._try_sqlite(name)

    def acquire(self, name: str, timeout_s: float) -> LockHandle:
        """Wait up to ``timeout_s`` for the lock.

        Raises:
            LockTimeoutError: still held elsewhere when the time is up.
        """
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while True:
            handle = self.try_acquire(name)
            if handle is not None:
                return handle
            if time.monotonic() >= deadline:
                raise LockTimeoutError(f"lock {name!r} is held elsewhere (waited {timeout_s:.0f} s)")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _try_postgres(self, name: str) -> LockHandle | None:
        key = lock_key(name)
        with self.db.guard():
            conn = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                got = conn.execute(select(func.pg_try_advisory_lock(key))).scalar()
            except BaseException:
                conn.close()
                raise
        if not got:
            conn.close()
            return None

        def release() -> None:
            try:
                conn.execute(select(func.pg_advisory_unlock(key)))
            finally:
                conn.close()

        return LockHandle(name, release)

    def _try_sqlite(self, name: str) -> LockHandle | None:
        with self.db.write() as session:
            now = session.scalar(select(db_now()))
            assert now is not None
            row = session.get(ControlLock, name)
            if row is not None and row.expires_at > now and not self._holder_gone(row.holder):
                return None
            if row is None:
                session.add(ControlLock(name=name, holder=self.holder, expires_at=now + self.lease_s))
            else:
                if row.holder != self.holder:
                    logger.info("taking over a stale lock", extra={"lock": name, "previous": row.holder})
                row.holder, row.expires_at = self.holder, now + self.lease_s

        def release() -> None:
            with self.db.write() as session:
                session.execute(
                    delete(ControlLock).where(ControlLock.name == name, ControlLock.holder == self.holder)
                )

        return LockHandle(name, release)

    def _holder_gone(self, holder: str) -> bool:
        """The holder was a process on this host that no longer runs."""
        parts = holder.split(":")
        if len(parts) < 4 or parts[1] != self._host or holder == self.holder:
            return False
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False
