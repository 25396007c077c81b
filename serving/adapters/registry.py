"""The adapter registry as one gateway sees it: routing from an in-memory snapshot of the control-plane database,
changes made through the database, engines kept in step by :class:`~serving.engine.reconcile.EngineReconciler`.

Requests never wait for the database: :meth:`AdapterRegistry.resolve` reads the snapshot this gateway holds. A
background loop polls the control plane's change counter every ``server.sync_interval_s`` (and at once on a
PostgreSQL change notification) and swaps in a new snapshot (one attribute assignment: a request sees the old or
the new registry, never a mix) when another gateway changed something; changes made here are applied at once.

A change is validated first, then (registration) loaded on every replica under all engines' locks and recorded in
one transaction — a failure part-way unloads it again, so the previous state stays intact — or (removal)
recorded first, so no gateway routes to it any more, drained on *every* gateway (each reports what it still has in
flight in its heartbeat), then unloaded. Aliases switch atomically.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ragswap import Settings
from serving.adapters.protocol import (
    AdapterCreate,
    AdapterPublic,
    AliasChangePublic,
    AliasPublic,
    AliasTargetPublic,
    ReplicaAdapterState,
    ShadowPublic,
)
from serving.adapters.routing import choose_target
from serving.adapters.validation import resolve_adapter_path, validate_adapter
from serving.controlplane import db_call
from serving.engine.pool import EnginePool
from serving.engine.reconcile import EngineReconciler
from serving.errors import ConflictError, NotFoundError, ServiceUnavailableError

if TYPE_CHECKING:
    from controlplane import AdapterVersion, AliasRecord, ChangeListener, ControlPlane, RegistrySnapshot

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """What a request's ``model`` resolved to."""

    requested: str
    adapter: AdapterVersion | None
    """None: the base model."""
    default_collection: str | None
    label: str
    """Metrics label: the base model or the adapter name."""
    alias: str | None = None
    """The alias the request named (its weighted targets picked ``adapter``)."""

    @property
    def engine_model(self) -> str | None:
        return self.adapter.engine_name if self.adapter else None

    @property
    def canonical(self) -> str:
        """The concrete version that serves the request (``name@version``), or the base model."""
        return self.adapter.ref if self.adapter else self.label

    @property
    def response_model(self) -> str:
        """The response's ``model``: what the client asked for, except that an alias names its concrete version
        (a weighted alias serves several, so the client learns which one answered)."""
        return self.canonical if self.alias is not None else self.requested


class AdapterRegistry:
    """Registered adapters and aliases of the control plane, as routed by this gateway."""

    def __init__(self, settings: Settings, pool: EnginePool, plane: ControlPlane, instance: str) -> None:
        from controlplane import RegistrySnapshot

        server = settings.server
        self.settings = settings
        self.pool = pool
        self.plane = plane
        self.instance = instance
        self.base_name = settings.models.base_model
        self.instance_ttl_s = 3 * server.heartbeat_s + server.sync_interval_s
        self.reconciler = EngineReconciler(
            pool,
            plane,
            instance,
            self.engine_names,
            drain_timeout_s=server.drain_timeout_s,
            instance_ttl_s=self.instance_ttl_s,
            lock_timeout_s=server.lock_timeout_s,
        )
        self._snap: RegistrySnapshot = RegistrySnapshot()
        self._name_locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._inflight: collections.Counter[str] = collections.Counter()
        self._drained = asyncio.Condition()
        self._base_dir: Path | None = None
        self._task: asyncio.Task[None] | None = None
        self._listener: ChangeListener | None = None
        self._wake = asyncio.Event()
        self._beat_now = False
        self._db_healthy = True
        pool.desired = self.engine_names

    # ---- lifecycle and sync ----------------------------------------------------------------------------------

    @property
    def snapshot(self) -> RegistrySnapshot:
        return self._snap

    async def start(self) -> None:
        """Load the registry, announce this gateway, start following changes."""
        await self.refresh()
        server = self.settings.server
        url = f"http://{server.host}:{server.port}"
        await db_call(
            self.plane, self.plane.instances.register_gateway, self.instance, url, self._snap.change
        )
        self._task = asyncio.create_task(self._sync_loop(), name="ragswap-registry-sync")
        if self.plane.db.is_postgres and server.change_notify:
            from controlplane import ChangeListener

            loop = asyncio.get_running_loop()
            self._listener = ChangeListener(
                self.plane.db.url.render_as_string(hide_password=False),
                lambda: loop.call_soon_threadsafe(self._wake.set),
            )
            self._listener.start()
        logger.info(
            "adapter registry loaded",
            extra={"adapters": [v.ref for v in self.versions()], "change": self._snap.change},
        )

    async def stop(self) -> None:
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        with suppress(Exception):
            await self.plane.call(self.plane.instances.deregister_gateway, self.instance)

    async def refresh(self) -> RegistrySnapshot:
        """Read the registry now and route by it (after a change made here, and when the counter moved)."""
        self._apply(await db_call(self.plane, self.plane.registry.snapshot))
        return self._snap

    def _apply(self, snapshot: RegistrySnapshot) -> None:
        if snapshot.change < self._snap.change:
            return  # an older read finishing late
        before, after = self._snap.engine_names(), snapshot.engine_names()
        self._snap = snapshot
        self.pool.metrics.adapters.set(len(snapshot.versions()))
        if before - after:
            self._beat_now = True  # tell the removing gateway soon that this one stopped routing there
        if after - before:
            self.pool.poke()  # probe now: replicas missing the new adapters get reconciled

    async def _sync_loop(self) -> None:
        server = self.settings.server
        last_beat = 0.0
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=server.sync_interval_s)
            self._wake.clear()
            try:
                change = await self.plane.call(self.plane.registry.change)
                if change != self._snap.change:
                    self._apply(await self.plane.call(self.plane.registry.snapshot))
                beat_due = time.monotonic() - last_beat >= server.heartbeat_s
                if self._beat_now or beat_due:
                    self._beat_now = False
                    await self.plane.call(
                        self.plane.instances.heartbeat,
                        self.instance,
                        self._snap.change,
                        self.draining(),
                        self.instance_ttl_s,
                    )
                    last_beat = time.monotonic()
                if beat_due:
                    await self._sweep()
                if not self._db_healthy:
                    logger.info("control-plane database reachable again")
                self._db_healthy = True
            except Exception as exc:  # the loop must survive anything; routing goes on from the last snapshot
                if self._db_healthy:
                    logger.warning(
                        "control plane unreachable; routing by the last registry snapshot",
                        extra={"error": str(exc), "change": self._snap.change},
                    )
                self._db_healthy = False

    async def _sweep(self) -> None:
        try:
            await self.reconciler.sweep()
        except Exception as exc:
            logger.warning("stale adapter sweep failed", extra={"error": str(exc)})

    def draining(self) -> list[str]:
        """Engine adapter names with requests in flight here that the registry no longer has."""
        current = self._snap.engine_names()
        return sorted(name for name, count in self._inflight.items() if count > 0 and name not in current)

    # ---- lookups ---------------------------------------------------------------------------------------------

    def versions(self) -> list[AdapterVersion]:
        return self._snap.versions()

    def engine_names(self) -> set[str]:
        return self._snap.engine_names()

    def aliases(self) -> dict[str, AliasRecord]:
        return dict(self._snap.aliases)

    def model_ids(self) -> list[str]:
        snap = self._snap
        ids = [self.base_name]
        for name in sorted(snap.adapters):
            ids.append(name)
            ids.extend(f"{name}@{v}" for v in sorted(snap.adapters[name]))
        ids.extend(sorted(snap.aliases))
        return ids

    def resolve(self, model: str, sticky_key: str | None = None) -> Target:
        """Base model, adapter name (latest version), ``name@version`` or alias; else 404 listing the models.

        Args:
            sticky_key: the request's session or user: a weighted alias then always sends it to the same version
                (see :mod:`serving.adapters.routing`); without one each request draws a version by weight.
        """
        snap = self._snap
        if model == self.base_name:
            return Target(model, None, None, self.base_name)
        alias = snap.aliases.get(model)
        if alias is not None:
            chosen = choose_target(model, alias.targets, sticky_key) if alias.targets else None
            adapter = snap.get(chosen.ref if chosen else alias.target)
            if adapter is not None:
                collection = alias.default_collection or adapter.default_collection
                return Target(model, adapter, collection, adapter.name, alias=model)
        else:
            adapter = snap.get(model)
            if adapter is not None:
                return Target(model, adapter, adapter.default_collection, adapter.name)
        raise NotFoundError(
            f"The model `{model}` does not exist. Available models: {', '.join(self.model_ids())}",
            param="model",
            code="model_not_found",
        )

    @asynccontextmanager
    async def use(self, target: Target) -> AsyncIterator[None]:
        """Mark a request in flight on an adapter version, so that removing it waits for the request."""
        key = target.engine_model
        if key is None:
            yield
            return
        self._inflight[key] += 1
        try:
            yield
        finally:
            self._inflight[key] -= 1
            if self._inflight[key] <= 0:
                del self._inflight[key]
                if key not in self._snap.engine_names():
                    self._beat_now = True  # a drained removal: say so at the next tick
                    self._wake.set()
                async with self._drained:
                    self._drained.notify_all()

    def public(self, version: AdapterVersion) -> AdapterPublic:
        snap = self._snap
        latest = snap.latest(version.name)
        states = []
        state: Literal["loaded", "missing", "failed", "down"]
        for replica in self.pool.replicas:
            if not replica.healthy:
                state, error = "down", replica.last_error
            elif version.engine_name in replica.loaded:
                state, error = "loaded", None
            elif version.engine_name in replica.failed_adapters:
                state, error = "failed", replica.failed_adapters[version.engine_name]
            else:
                state, error = "missing", None
            states.append(
                ReplicaAdapterState(replica=replica.index, url=replica.url, state=state, error=error)
            )
        return AdapterPublic(
            id=version.id,
            name=version.name,
            version=version.version,
            model=version.ref,
            latest=latest is not None and latest.version == version.version,
            path=version.path,
            rank=version.rank,
            target_modules=version.target_modules,
            base_check=version.base_check,
            default_collection=version.default_collection,
            aliases=sorted(
                a for a, rec in snap.aliases.items() if any(t.ref == version.ref for t in rec.targets)
            ),
            created_at=version.created_at,
            replicas=states,
        )

    def list_public(self, ref: str | None = None) -> list[AdapterPublic]:
        versions = self.versions()
        if ref is not None:
            name, sep, _ = ref.partition("@")
            one = self._snap.get(ref) if sep else None
            versions = [one] if one else [] if sep else [v for v in versions if v.name == name]
            if not versions:
                raise NotFoundError(
                    f"adapter `{ref}` is not registered", param="name", code="adapter_not_found"
                )
        return [self.public(v) for v in versions]

    def alias_public(self, alias: str, record: AliasRecord) -> AliasPublic:
        return AliasPublic(
            alias=alias,
            target=record.target,
            targets=[AliasTargetPublic(target=t.ref, weight=t.weight) for t in record.targets],
            default_collection=record.default_collection,
            shadow=(
                ShadowPublic(candidate=record.shadow.ref, percent=record.shadow.percent)
                if record.shadow is not None
                else None
            ),
            updated_at=record.updated_at,
        )

    # ---- changes ---------------------------------------------------------------------------------------------

    async def _base_model_dir(self) -> Path:
        if self._base_dir is None:
            from ragswap import ModelStoreError, resolve_model

            try:
                path = Path(await asyncio.to_thread(resolve_model, self.base_name, self.settings.models))
            except ModelStoreError as exc:
                raise ServiceUnavailableError(f"cannot validate adapters: {exc}") from exc
            if not (path / "config.json").is_file():
                raise ServiceUnavailableError(
                    f"cannot validate adapters: no local config.json for {self.base_name}"
                )
            self._base_dir = path
        return self._base_dir

    def _check_names(self, name: str, aliases: list[str]) -> None:
        """Fast 409s from the snapshot; the database transaction checks again against the committed state."""
        snap = self._snap
        if name == self.base_name or name in snap.aliases:
            raise ConflictError(f"`{name}` is already a model or alias name", param="name", code="name_taken")
        for alias in aliases:
            if alias == self.base_name or alias in snap.adapters or alias == name:
                raise ConflictError(
                    f"alias `{alias}` would shadow a model or adapter name",
                    param="aliases",
                    code="name_taken",
                )

    async def register(self, request: AdapterCreate, actor: str | None = None) -> AdapterVersion:
        """Validate, load on every replica, then record; 4xx and an unchanged registry on any failure."""
        from controlplane import NewVersion

        name = request.name
        if not self.settings.engine.enable_lora:
            raise ConflictError(
                "the engines run with LoRA disabled (engine.enable_lora=false)", code="lora_disabled"
            )
        self._check_names(name, request.aliases)
        path = resolve_adapter_path(request.path, list(self.settings.server.adapter_roots))
        base_dir = await self._base_model_dir()
        info = await asyncio.to_thread(validate_adapter, path, base_dir, self.settings.engine.max_lora_rank)
        async with self._name_locks[name], self.reconciler.engines_locked():
            # Under every engine's lock no other gateway can register now: this read is current.
            snap = await self.refresh()
            self._check_names(name, request.aliases)
            existing = snap.adapters.get(name, {})
            version_no = request.version or (max(existing) + 1 if existing else 1)
            if version_no in existing:
                raise ConflictError(
                    f"`{name}@{version_no}` is already registered; remove it first or pick another version",
                    param="version",
                    code="version_exists",
                )
            new = NewVersion(
                name=name,
                version=version_no,
                path=str(info.path),
                rank=info.rank,
                target_modules=info.target_modules,
                base_check=info.base_check,
                default_collection=request.default_collection,
                details={"alpha": info.alpha},
            )
            engine_name = f"{name}@{version_no}"
            await self.reconciler.load_new(engine_name, new.path)
            try:
                version, _ = await db_call(
                    self.plane,
                    self.plane.registry.add_version,
                    new,
                    request.aliases,
                    reserved={self.base_name},
                    actor=actor,
                )
            except BaseException:
                await self.reconciler.discard_new(engine_name)
                raise
            await self.refresh()
        self.pool.metrics.adapter_ops.labels("register", "ok").inc()
        logger.info(
            "adapter registered", extra={"adapter": version.ref, "id": version.id, "path": version.path}
        )
        return version

    async def remove(
        self, ref: str, force: bool = False, actor: str | None = None
    ) -> tuple[list[str], list[str]]:
        """Remove ``name`` (all versions) or ``name@version``: stop routing to it, drain, unload everywhere."""
        name = ref.partition("@")[0]
        async with self._name_locks[name]:
            removal = await db_call(self.plane, self.plane.registry.remove, ref, force=force, actor=actor)
            await self.refresh()  # this gateway stops routing there now, the others within a sync interval
            names = [v.engine_name for v in removal.versions]
            await asyncio.gather(*(self._drain(n, removal.change) for n in names))
            await self.reconciler.finish_removal(names)
        refs = sorted(v.ref for v in removal.versions)
        self.pool.metrics.adapter_ops.labels("remove", "ok").inc()
        logger.info("adapter removed", extra={"adapters": refs, "aliases_removed": removal.aliases})
        return refs, removal.aliases

    async def _drain(self, engine_name: str, change: int) -> None:
        """Wait (up to ``server.drain_timeout_s``) until no gateway has requests in flight on ``engine_name``."""
        timeout = self.settings.server.drain_timeout_s
        deadline = time.monotonic() + timeout
        async with self._drained:
            with suppress(TimeoutError):
                await asyncio.wait_for(
                    self._drained.wait_for(lambda: self._inflight[engine_name] <= 0), timeout=timeout
                )
        while time.monotonic() < deadline:
            if await db_call(
                self.plane,
                self.plane.instances.drained,
                engine_name,
                change,
                self.instance_ttl_s,
                self.instance,
            ):
                return
            await asyncio.sleep(min(0.2, self.settings.server.sync_interval_s))
        logger.warning("unloading with requests still in flight", extra={"adapter": engine_name})

    async def set_alias(
        self,
        alias: str,
        target: str | list[tuple[str, int]],
        default_collection: str | None,
        actor: str | None = None,
        reason: str | None = None,
        **record: Any,
    ) -> AliasRecord:
        """Point ``alias`` at one target or weighted targets (one transaction; recorded in its history).

        ``record`` passes ``kind`` and ``details`` through (a promotion records its decision with the change).
        """
        result, _ = await db_call(
            self.plane,
            self.plane.registry.set_alias,
            alias,
            target,
            default_collection,
            reserved={self.base_name},
            actor=actor,
            reason=reason,
            **record,
        )
        await self.refresh()
        self.pool.metrics.adapter_ops.labels("alias", "ok").inc()
        logger.info(
            "alias set",
            extra={"alias": alias, "targets": {t.ref: t.weight for t in result.targets}, "reason": reason},
        )
        return result

    async def set_shadow(
        self,
        alias: str,
        candidate: str | None,
        percent: int = 0,
        actor: str | None = None,
        reason: str | None = None,
    ) -> AliasRecord:
        """Mirror ``percent`` % of ``alias``'s chat requests to ``candidate`` (``None``: stop); recorded."""
        result, _ = await db_call(
            self.plane,
            self.plane.registry.set_shadow,
            alias,
            candidate,
            percent,
            actor=actor,
            reason=reason,
        )
        await self.refresh()
        self.pool.metrics.adapter_ops.labels("shadow", "ok").inc()
        logger.info(
            "alias shadow set" if candidate else "alias shadow cleared",
            extra={"alias": alias, "candidate": candidate, "percent": percent, "reason": reason},
        )
        return result

    async def rollback_alias(
        self, alias: str, actor: str | None = None, reason: str | None = None
    ) -> AliasRecord:
        """Return ``alias`` atomically to its previous target set (404/409 when there is none to return to)."""
        result, _ = await db_call(
            self.plane,
            self.plane.registry.rollback_alias,
            alias,
            reserved={self.base_name},
            actor=actor,
            reason=reason,
        )
        await self.refresh()
        self.pool.metrics.adapter_ops.labels("rollback", "ok").inc()
        logger.info(
            "alias rolled back", extra={"alias": alias, "targets": {t.ref: t.weight for t in result.targets}}
        )
        return result

    async def alias_history(self, alias: str, limit: int = 100) -> list[AliasChangePublic]:
        """The recorded changes of ``alias``, newest first."""
        changes = await db_call(self.plane, self.plane.registry.alias_history, alias, limit)
        return [AliasChangePublic.model_validate(c, from_attributes=True) for c in changes]

    async def delete_alias(self, alias: str, actor: str | None = None) -> None:
        await db_call(self.plane, self.plane.registry.delete_alias, alias, actor=actor)
        await self.refresh()

    async def history(self, subject: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Registry events (who changed what, when), newest first."""
        return await db_call(self.plane, self.plane.registry.events, subject, limit)
