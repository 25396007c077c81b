"""ragswap's control plane: the database every gateway and worker shares.

SQLite in ``server.state_dir`` is the embedded default (nothing to install); PostgreSQL
(``server.database_url``) lets several gateways and workers run as one service. The schema is created and
upgraded by Alembic migrations shipped in this package, run at start.

Public API (imported lazily: SQLAlchemy is not needed for ``ragswap --help``):

- :class:`ControlPlane` — open (connect, migrate, import a legacy state dir) and the stores below.
- :class:`RegistryStore`, :class:`RegistrySnapshot`, :class:`AdapterVersion`, :class:`AliasRecord`,
  :class:`AliasChange`, :class:`NewVersion` — the adapter registry.
- :class:`JobStore`, :class:`JobRecord`, :class:`ClaimedJob` — the evaluation job queue and traces.
- :class:`InstanceStore`, :class:`Locks`, :func:`instance_id` — gateway heartbeats, engine records, locks.
- :class:`Database`, :func:`upgrade`, :func:`import_state_dir` — lower level.
- Errors: :class:`ControlPlaneError` and its subclasses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controlplane.changes import ChangeListener
    from controlplane.db import Database, default_url, safe_url
    from controlplane.errors import (
        ControlPlaneError,
        DatabaseUnavailableError,
        LeaseLostError,
        LegacyImportError,
        MigrationError,
        RecordConflictError,
        RecordNotFoundError,
    )
    from controlplane.instances import EngineRecord, GatewayInfo, InstanceStore
    from controlplane.jobs import FINAL_STATUSES, ClaimedJob, JobRecord, JobStore
    from controlplane.legacy import ImportReport, import_state_dir
    from controlplane.locks import LockHandle, Locks, LockTimeoutError, instance_id
    from controlplane.migrate import current_revision, head_revision, upgrade
    from controlplane.registry import (
        AdapterVersion,
        AliasChange,
        AliasRecord,
        AliasTargetRecord,
        NewVersion,
        RegistrySnapshot,
        RegistryStore,
        Removal,
        ShadowRecord,
    )
    from controlplane.service import ControlPlane

_EXPORTS = {
    "ControlPlane": "controlplane.service",
    "ChangeListener": "controlplane.changes",
    "Database": "controlplane.db",
    "default_url": "controlplane.db",
    "safe_url": "controlplane.db",
    "upgrade": "controlplane.migrate",
    "current_revision": "controlplane.migrate",
    "head_revision": "controlplane.migrate",
    "import_state_dir": "controlplane.legacy",
    "ImportReport": "controlplane.legacy",
    "RegistryStore": "controlplane.registry",
    "RegistrySnapshot": "controlplane.registry",
    "AdapterVersion": "controlplane.registry",
    "AliasChange": "controlplane.registry",
    "AliasRecord": "controlplane.registry",
    "AliasTargetRecord": "controlplane.registry",
    "ShadowRecord": "controlplane.registry",
    "NewVersion": "controlplane.registry",
    "Removal": "controlplane.registry",
    "JobStore": "controlplane.jobs",
    "JobRecord": "controlplane.jobs",
    "ClaimedJob": "controlplane.jobs",
    "FINAL_STATUSES": "controlplane.jobs",
    "InstanceStore": "controlplane.instances",
    "GatewayInfo": "controlplane.instances",
    "EngineRecord": "controlplane.instances",
    "Locks": "controlplane.locks",
    "LockHandle": "controlplane.locks",
    "LockTimeoutError": "controlplane.locks",
    "instance_id": "controlplane.locks",
    "ControlPlaneError": "controlplane.errors",
    "RecordNotFoundError": "controlplane.errors",
    "RecordConflictError": "controlplane.errors",
    "DatabaseUnavailableError": "controlplane.errors",
    "MigrationError": "controlplane.errors",
    "LegacyImportError": "controlplane.errors",
    "LeaseLostError": "controlplane.errors",
}

__all__ = [
    "FINAL_STATUSES",
    "AdapterVersion",
    "AliasChange",
    "AliasRecord",
    "AliasTargetRecord",
    "ChangeListener",
    "ClaimedJob",
    "ControlPlane",
    "ControlPlaneError",
    "Database",
    "DatabaseUnavailableError",
    "EngineRecord",
    "GatewayInfo",
    "ImportReport",
    "InstanceStore",
    "JobRecord",
    "JobStore",
    "LeaseLostError",
    "LegacyImportError",
    "LockHandle",
    "LockTimeoutError",
    "Locks",
    "MigrationError",
    "NewVersion",
    "RecordConflictError",
    "RecordNotFoundError",
    "RegistrySnapshot",
    "RegistryStore",
    "Removal",
    "ShadowRecord",
    "current_revision",
    "default_url",
    "head_revision",
    "import_state_dir",
    "instance_id",
    "safe_url",
    "upgrade",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
