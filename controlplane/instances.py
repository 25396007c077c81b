"""Who is running: gateway heartbeats (what each applied, what it still drains) and engine reconciliation records.

A removed adapter version may only be unloaded from the engines once no gateway can still send it requests: every
live gateway must have applied the change that removed it (so it routes nothing new there) and must not report
requests in flight on it. :meth:`InstanceStore.drained` answers that; a gateway that stopped heartbeating for
``ttl_s`` no longer counts (it cannot be sending anything).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import delete, select

from controlplane.clock import db_now, iso, read_now
from controlplane.db import Database
from controlplane.models import EngineReplica, GatewayInstance


@dataclass(frozen=True)
class GatewayInfo:
    id: str
    host: str
    pid: int
    url: str | None
    started_at: str
    heartbeat_age_s: float
    applied_change: int
    busy: list[str]


@dataclass(frozen=True)
class EngineRecord:
    url: str
    reconciled_change: int
    held: list[str]
    reconciled_at: str
    reconciled_by: str
    loads: int
    unloads: int
    last_error: str | None


class InstanceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- gateways --------------------------------------------------------------------------------------------

    def register_gateway(self, instance: str, url: str | None, applied_change: int) -> None:
        with self.db.write() as session:
            now = read_now(session)
            session.merge(
                GatewayInstance(
                    id=instance,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    url=url,
                    started_at=now,
                    heartbeat_at=now,
                    applied_change=applied_change,
                    busy=[],
                )
            )

    def heartbeat(self, instance: str, applied_change: int, busy: Collection[str], ttl_s: float) -> None:
        """Record that ``instance`` is alive, routes by ``applied_change`` and drains ``busy``; forget gateways
        silent for more than 10 × ``ttl_s``."""
        with self.db.write() as session:
            now = read_now(session)
            row = session.get(GatewayInstance, instance)
            if row is None:  # removed as dead while this gateway was cut off: come back
                row = GatewayInstance(
                    id=instance, host=socket.gethostname(), pid=os.getpid(), url=None, started_at=now
                )
                session.add(row)
            row.heartbeat_at, row.applied_change, row.busy = now, applied_change, sorted(busy)
            session.execute(delete(GatewayInstance).where(GatewayInstance.heartbeat_at < now - 10 * ttl_s))

    def deregister_gateway(self, instance: str) -> None:
        with self.db.write() as session:
            session.execute(delete(GatewayInstance).where(GatewayInstance.id == instance))

    def gateways(self, ttl_s: float) -> list[GatewayInfo]:
        """Gateways that heartbeated within ``ttl_s``."""
        with self.db.read() as session:
            now = read_now(session)
            rows = session.scalars(
                select(GatewayInstance)
                .where(GatewayInstance.heartbeat_at >= now - ttl_s)
                .order_by(GatewayInstance.started_at)
            ).all()
            return [
                GatewayInfo(
                    id=r.id,
                    host=r.host,
                    pid=r.pid,
                    url=r.url,
                    started_at=iso(r.started_at),
                    heartbeat_age_s=round(now - r.heartbeat_at, 3),
                    applied_change=r.applied_change,
                    busy=list(r.busy),
                )
                for r in rows
            ]

    def drained(self, engine_name: str, change: int, ttl_s: float, exclude: str | None = None) -> bool:
        """No live gateway (other than ``exclude``) can still send requests to ``engine_name``."""
        with self.db.read() as session:
            rows = session.scalars(
                select(GatewayInstance).where(GatewayInstance.heartbeat_at >= db_now() - ttl_s)
            ).all()
            return all(
                r.applied_change >= change and engine_name not in r.busy for r in rows if r.id != exclude
            )

    # ---- engines ---------------------------------------------------------------------------------------------

    def record_engine(
        self,
        url: str,
        *,
        change: int,
        held: Collection[str],
        by: str,
        loads: int = 0,
        unloads: int = 0,
        error: str | None = None,
    ) -> None:
        with self.db.write() as session:
            now = read_now(session)
            row = session.get(EngineReplica, url)
            if row is None:
                row = EngineReplica(url=url, reconciled_at=now, reconciled_by=by, loads=0, unloads=0)
                session.add(row)
            row.reconciled_change, row.held = change, sorted(held)
            row.reconciled_at, row.reconciled_by, row.last_error = now, by, error
            row.loads += loads
            row.unloads += unloads

    def engines(self) -> list[EngineRecord]:
        with self.db.read() as session:
            return [
                EngineRecord(
                    url=r.url,
                    reconciled_change=r.reconciled_change,
                    held=list(r.held),
                    reconciled_at=iso(r.reconciled_at),
                    reconciled_by=r.reconciled_by,
                    loads=r.loads,
                    unloads=r.unloads,
                    last_error=r.last_error,
                )
                for r in session.scalars(select(EngineReplica).order_by(EngineReplica.url)).all()
            ]
