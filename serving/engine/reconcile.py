"""Make every engine replica hold exactly the registered adapters: once per change, however many gateways run.

The desired set is the control-plane registry; the actual set is what the engine reports in ``/v1/models``.
Reconciling a replica means, under that engine's lock (a PostgreSQL advisory lock, or an SQLite lease, keyed by
the engine URL — loopback URLs also by host, since they name a different engine on every machine):

1. read the registry *fresh from the database* (never this gateway's possibly older snapshot);
2. ask the engine what it holds;
3. load what is missing; unload what the registry says must go — versions removed and drained everywhere (or
   past the drain timeout), and loads of registrations whose gateway died before recording them. Adapters the
   registry knows nothing about are left alone (another control plane, or an operator, may own them).

Because every gateway observes under the lock, the first one to get it does the work and the others find
nothing left to do: each change reaches each engine once, and an engine that restarted empty is refilled once.
A gateway that does not get the lock reports the replica ready when the engine already holds the registry's set
(readiness follows the engine's state, not a flag of whichever gateway reconciled it).

Registration and removal take the locks of *all* engines (in a fixed order, so two changes cannot deadlock)
around loading/unloading and their database write, so a reconciler never mistakes a registration in flight for
an orphan, nor two gateways register the same ``name@version`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from serving.controlplane import db_call
from serving.engine.pool import EnginePool, Replica
from serving.errors import BadRequestError, GatewayError, ServiceUnavailableError

if TYPE_CHECKING:
    from controlplane import ControlPlane, LockHandle, RegistrySnapshot

logger = logging.getLogger(__name__)


def engine_lock_name(url: str) -> str:
    """The lock of one engine: its URL, prefixed by the host name for loopback URLs (one engine per machine)."""
    host = urlsplit(url).hostname or ""
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    return f"engine:{socket.gethostname()}/{url}" if local else f"engine:{url}"


class EngineReconciler:
    """Loads and unloads adapters on the replicas of ``pool``; the pool calls it for replicas that need it.

    Args:
        pool: the replicas.
        plane: the control plane (registry, locks, gateway heartbeats, engine records).
        instance: this gateway's instance id (lock holder, ``reconciled_by``).
        desired: engine adapter names of this gateway's current registry snapshot.
    """

    def __init__(
        self,
        pool: EnginePool,
        plane: ControlPlane,
        instance: str,
        desired: Callable[[], set[str]],
        *,
        drain_timeout_s: float,
        instance_ttl_s: float,
        lock_timeout_s: float,
    ) -> None:
        self.pool = pool
        self.plane = plane
        self.instance = instance
        self.desired = desired
        self.drain_timeout_s = drain_timeout_s
        self.instance_ttl_s = instance_ttl_s
        self.lock_timeout_s = lock_timeout_s
        self.locks = plane.locks(instance)
        self.loads = 0
        """Adapter loads this gateway did on engines (registration and reconciliation)."""

    # ---- locks -----------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def engines_locked(self) -> AsyncIterator[None]:
        """Hold every replica's lock (sorted, so concurrent changes cannot deadlock); 503 after the timeout."""
        held: list[LockHandle] = []
        try:
            for name in sorted({engine_lock_name(r.url) for r in self.pool.replicas}):
                held.append(await self._acquire(name))
            yield
        finally:
            for handle in reversed(held):
                await self.plane.call(handle.release)

    async def _acquire(self, name: str) -> LockHandle:
        """Wait for a lock without holding a database thread while waiting (tries, then sleeps on the loop)."""
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.02
        while (handle := await db_call(self.plane, self.locks.try_acquire, name)) is None:
            if time.monotonic() >= deadline:
                raise ServiceUnavailableError(
                    f"another registry change or engine reconciliation holds {name} (waited "
                    f"{self.lock_timeout_s:.0f} s); retry shortly",
                    code="registry_busy",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        return handle

    # ---- engine operations -----------------------------------------------------------------------------------

    async def load(self, replica: Replica, engine_name: str, path: str) -> None:
        try:
            await self.pool.engine_call(
                replica,
                "/v1/load_lora_adapter",
                {"lora_name": engine_name, "lora_path": path},
                f"loading {engine_name}",
            )
        except BadRequestError:
            # Already loaded there (by a gateway that died before recording it)? Then that is success.
            if engine_name not in await self.pool.engine_models(replica):
                raise
        self.loads += 1
        self.pool.metrics.adapter_ops.labels("engine_load", "ok").inc()
        replica.loaded.add(engine_name)
        replica.failed_adapters.pop(engine_name, None)

    async def unload(self, replica: Replica, engine_name: str) -> None:
        try:
            await self.pool.engine_call(
                replica, "/v1/unload_lora_adapter", {"lora_name": engine_name}, f"unloading {engine_name}"
            )
        except GatewayError as exc:
            if engine_name in await self.pool.engine_models(replica):
                logger.warning("unload failed", extra={"replica": replica.index, "error": exc.message})
                raise
        self.pool.metrics.adapter_ops.labels("engine_unload", "ok").inc()
        replica.loaded.discard(engine_name)

    async def load_everywhere(self, engine_name: str, path: str) -> None:
        """Load on every healthy replica; if one fails, unload it from the others and raise that failure."""
        replicas = [r for r in self.pool.replicas if r.healthy]
        results = await asyncio.gather(
            *(self.load(r, engine_name, path) for r in replicas), return_exceptions=True
        )
        failures = [res for res in results if isinstance(res, BaseException)]
        if not failures:
            return
        done = [r for r, res in zip(replicas, results, strict=True) if not isinstance(res, BaseException)]
        await asyncio.gather(*(self.unload(r, engine_name) for r in done), return_exceptions=True)
        raise failures[0]

    async def unload_everywhere(self, engine_names: Collection[str]) -> None:
        """Unload from every healthy replica; a replica that fails keeps it until its next reconciliation."""
        for engine_name in engine_names:
            await asyncio.gather(
                *(self.unload(r, engine_name) for r in self.pool.replicas if r.healthy),
                return_exceptions=True,
            )

    async def load_new(self, engine_name: str, path: str) -> None:
        """Load a registration everywhere (call it holding :meth:`engines_locked`); guarded so that a gateway dying
        before the registration is recorded does not leave it on the engines."""
        await db_call(self.plane, self.plane.registry.guard_load, engine_name)
        try:
            await self.load_everywhere(engine_name, path)
        except BaseException:
            await db_call(self.plane, self.plane.registry.unloaded, [engine_name])
            raise

    async def discard_new(self, engine_name: str) -> None:
        """Undo :meth:`load_new` (recording the registration failed)."""
        await self.unload_everywhere([engine_name])
        with contextlib.suppress(Exception):  # the database may be why recording failed: the guard stays then
            await self.plane.call(self.plane.registry.unloaded, [engine_name])

    async def finish_removal(self, engine_names: Collection[str]) -> None:
        """Unload removed (and drained) versions everywhere, then forget their pending unloads."""
        async with self.engines_locked():
            await self.unload_everywhere(engine_names)
            held = set().union(*(r.loaded for r in self.pool.replicas if r.healthy))
            await db_call(
                self.plane, self.plane.registry.unloaded, [n for n in engine_names if n not in held]
            )

    # ---- reconciliation --------------------------------------------------------------------------------------

    async def __call__(self, replica: Replica) -> bool:
        """Reconcile one replica; whether it now holds the registered set (the pool's readiness input)."""
        handle = await self.plane.call(self.locks.try_acquire, engine_lock_name(replica.url))
        if handle is None:  # another gateway (or change) is at it: judge by what the engine holds
            replica.loaded = await self.pool.engine_models(replica)
            return not (self.desired() - replica.loaded - set(replica.failed_adapters))
        try:
            return await self._reconcile(replica)
        finally:
            await self.plane.call(handle.release)

    async def _reconcile(self, replica: Replica) -> bool:
        snapshot: RegistrySnapshot = await self.plane.call(self.plane.registry.snapshot)
        held = await self.pool.engine_models(replica)
        replica.loaded = set(held)
        loads = unloads = 0
        errors = []
        for version in snapshot.versions():
            if version.engine_name in held:
                replica.failed_adapters.pop(version.engine_name, None)
                continue
            try:
                await self.load(replica, version.engine_name, version.path)
                loads += 1
                logger.info("adapter re-applied", extra={"replica": replica.index, "adapter": version.ref})
            except GatewayError as exc:
                replica.failed_adapters[version.engine_name] = exc.message
                errors.append(f"{version.ref}: {exc.message}")
                logger.warning(
                    "adapter could not be re-applied",
                    extra={"replica": replica.index, "adapter": version.ref, "error": exc.message},
                )
        for engine_name in sorted((held - snapshot.engine_names()) & set(snapshot.pending_unloads)):
            if await self._may_unload(engine_name, snapshot):
                try:
                    await self.unload(replica, engine_name)
                    unloads += 1
                    logger.info(
                        "stale adapter unloaded", extra={"replica": replica.index, "adapter": engine_name}
                    )
                except GatewayError as exc:
                    errors.append(f"{engine_name}: {exc.message}")
        await self.plane.call(
            self.plane.instances.record_engine,
            replica.url,
            change=snapshot.change,
            held=replica.loaded,
            by=self.instance,
            loads=loads,
            unloads=unloads,
            error="; ".join(errors)[:2000] or None,
        )
        return True

    async def _may_unload(self, engine_name: str, snapshot: RegistrySnapshot) -> bool:
        """A pending unload may happen once no live gateway can still route to it, or past the drain timeout.

        (A registration's guard has change 0: every gateway has applied that, and none routes to an adapter that
        was never recorded, so it goes at once — the registering gateway released the engine locks, so it is no
        longer loading it.)"""
        change, requested_at = snapshot.pending_unloads[engine_name]
        if snapshot.read_at - requested_at > self.drain_timeout_s:
            return True
        return await self.plane.call(
            self.plane.instances.drained, engine_name, change, self.instance_ttl_s, None
        )

    async def sweep(self) -> None:
        """Reconcile ready replicas holding adapters the registry wants gone (left by a gateway that died between
        a removal and its unload, or between loading a registration and recording it)."""
        desired = self.desired()
        stale = [r for r in self.pool.replicas if r.ready and r.loaded - desired]
        if not stale:
            return
        pending = await self.plane.call(self.plane.registry.pending_unloads)
        for replica in stale:
            if (replica.loaded - desired) & set(pending):
                await self(replica)
