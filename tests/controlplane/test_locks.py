"""Named locks on SQLite and PostgreSQL: exclusive between holders (also within one process), released on
release, and not stuck when a holder dies (PostgreSQL drops the session's advisory lock; SQLite takes over a
lease whose process is gone)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from sqlalchemy import text

from controlplane import ControlPlane, LockTimeoutError, instance_id
from controlplane.models import ControlLock


def test_exclusive_and_released(plane: ControlPlane) -> None:
    a = plane.locks(instance_id("test"))
    b = plane.locks(instance_id("test"))
    held = a.try_acquire("engine:http://10.0.0.5:8100")
    assert held is not None
    assert b.try_acquire("engine:http://10.0.0.5:8100") is None
    assert a.try_acquire("engine:http://10.0.0.5:8100") is None  # not re-entrant
    assert b.try_acquire("engine:http://10.0.0.6:8100") is not None  # other names are independent
    with pytest.raises(LockTimeoutError):
        b.acquire("engine:http://10.0.0.5:8100", timeout_s=0.3)
    held.release()
    held.release()  # idempotent
    again = b.acquire("engine:http://10.0.0.5:8100", timeout_s=5)
    again.release()


def test_dead_holder_does_not_keep_the_lock(plane: ControlPlane) -> None:
    survivor = plane.locks(instance_id("test"))
    if plane.db.is_postgres:
        doomed = plane.locks(instance_id("doomed"))
        assert doomed.try_acquire("registry") is not None
        with plane.db.engine.connect() as conn:  # the holder's connection dies (process killed, network cut)
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND pid <> pg_backend_pid() "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            )
            conn.commit()
        handle = survivor.acquire("registry", timeout_s=5)
    else:
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
        dead_pid = int(gone.stdout)
        with plane.db.write() as session:
            session.add(
                ControlLock(
                    name="registry", holder=f"gw:{socket.gethostname()}:{dead_pid}:x", expires_at=9e18
                )
            )
        handle = survivor.try_acquire("registry")
        assert handle is not None
    handle.release()
