"""One process's handle on the control plane: the database, its stores, and a thread pool for their calls.

Every store method blocks (SQLAlchemy's synchronous API: psycopg 3 and pysqlite). Async callers go through
:meth:`ControlPlane.call`, which runs them on the control plane's *own* small thread pool, so that database calls
neither block an event loop nor queue behind unrelated ``asyncio.to_thread`` work (embedding, reranking).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from controlplane.db import Database, default_url, safe_url
from controlplane.instances import InstanceStore
from controlplane.jobs import JobStore
from controlplane.legacy import ImportReport, import_state_dir
from controlplane.locks import Locks
from controlplane.migrate import upgrade
from controlplane.registry import RegistryStore

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class ControlPlane:
    """The database and its stores (``registry``, ``jobs``, ``instances``)."""

    def __init__(self, db: Database, *, threads: int = 8) -> None:
        self.db = db
        self.registry = RegistryStore(db)
        self.jobs = JobStore(db)
        self.instances = InstanceStore(db)
        self.imported: ImportReport | None = None
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="controlplane")

    @classmethod
    def open(
        cls,
        url: str | None,
        *,
        state_dir: Path | None = None,
        migrate: bool = True,
        import_legacy: bool = True,
        pool_size: int = 5,
    ) -> ControlPlane:
        """Connect, migrate to the head revision, import a file-based ``state_dir`` into an empty database.

        ``url`` ``None`` means the embedded default, ``state_dir/controlplane.db``. Blocking: call it from a
        thread (the gateway's lifespan does).

        Raises:
            DatabaseUnavailableError, MigrationError, LegacyImportError: the process must not start.
        """
        if url is None:
            if state_dir is None:
                raise ValueError("give a database URL or a state dir for the embedded SQLite database")
            url = default_url(state_dir)
        db = Database(url, pool_size=pool_size)
        try:
            if migrate:
                upgrade(db)
            plane = cls(db, threads=max(4, pool_size))
            if import_legacy and state_dir is not None:
                plane.imported = import_state_dir(db, state_dir)
        except BaseException:
            db.close()
            raise
        logger.info("control plane open", extra={"database": safe_url(db.url), "dialect": db.dialect})
        return plane

    def locks(self, holder: str, *, lease_s: float = 300.0) -> Locks:
        return Locks(self.db, holder, lease_s=lease_s)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking store method on the control plane's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.db.close()
