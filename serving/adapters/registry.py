"""The adapter registry: which adapter versions and aliases exist, and making every replica hold them.

Record per name and version (``name@3``), increasing int ids, an ``asyncio.Lock`` per adapter name around engine
changes, one short lock around the persisted state. Every change is validated first, applied to the engines,
then persisted; a failure part-way rolls the engines back, so the previous state stays intact. Aliases switch
atomically (one dict assignment). Removing a version waits for its in-flight requests before unloading it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from ragswap.config import Settings
from serving.adapters.protocol import AdapterCreate, AdapterPublic, AliasPublic, ReplicaAdapterState
from serving.adapters.store import AdapterVersion, AliasRecord, RegistryFile, read_registry, write_registry
from serving.adapters.validation import resolve_adapter_path, validate_adapter
from serving.engine.pool import EnginePool, Replica
from serving.errors import (
    BadRequestError,
    ConflictError,
    GatewayError,
    NotFoundError,
    ServiceUnavailableError,
)

logger = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Target:
    """What a request's ``model`` resolved to."""

    requested: str
    adapter: AdapterVersion | None
    """None: the base model."""
    default_collection: str | None
    label: str
    """Metrics label: the base model or the adapter name."""

    @property
    def engine_model(self) -> str | None:
        return self.adapter.engine_name if self.adapter else None

    @property
    def canonical(self) -> str:
        return self.adapter.ref if self.adapter else self.label


class AdapterRegistry:
    """Registered adapters and aliases, persisted in ``server.state_dir``."""

    def __init__(self, settings: Settings, pool: EnginePool) -> None:
        self.settings = settings
        self.pool = pool
        self.base_name = settings.models.base_model
        self._data = RegistryFile()
        self._name_locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._state_lock = asyncio.Lock()
        self._inflight: collections.Counter[str] = collections.Counter()
        self._drained = asyncio.Condition()
        self._base_dir: Path | None = None

    # ---- persistence -----------------------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.settings.server.state_dir

    def load(self) -> None:
        self._data = read_registry(self.state_dir)
        self.pool.desired = self.engine_names
        self.pool.metrics.adapters.set(len(self.versions()))
        logger.info("adapter registry loaded", extra={"adapters": [v.ref for v in self.versions()]})

    async def _save(self, data: RegistryFile) -> None:
        await asyncio.to_thread(write_registry, self.state_dir, data)
        self._data = data
        self.pool.metrics.adapters.set(len(self.versions()))

    # ---- lookups ---------------------------------------------------------------------------------------------

    def versions(self) -> list[AdapterVersion]:
        return sorted((v for vs in self._data.adapters.values() for v in vs.values()), key=lambda v: v.id)

    def engine_names(self) -> set[str]:
        return {v.engine_name for v in self.versions()}

    def aliases(self) -> dict[str, AliasRecord]:
        return dict(self._data.aliases)

    def _latest(self, name: str) -> AdapterVersion | None:
        versions = self._data.adapters.get(name)
        return versions[max(versions)] if versions else None

    def _get(self, ref: str) -> AdapterVersion | None:
        name, sep, ver = ref.partition("@")
        if not sep:
            return self._latest(name)
        if not ver.isdigit():
            return None
        return self._data.adapters.get(name, {}).get(int(ver))

    def model_ids(self) -> list[str]:
        ids = [self.base_name]
        for name in sorted(self._data.adapters):
            ids.append(name)
            ids.extend(f"{name}@{v}" for v in sorted(self._data.adapters[name]))
        ids.extend(sorted(self._data.aliases))
        return ids

    def resolve(self, model: str) -> Target:
        """Base model, adapter name (latest version), ``name@version`` or alias; else 404 listing the models."""
        if model == self.base_name:
            return Target(model, None, None, self.base_name)
        alias = self._data.aliases.get(model)
        if alias is not None:
            adapter = self._get(alias.target)
            if adapter is not None:
                collection = alias.default_collection or adapter.default_collection
                return Target(model, adapter, collection, adapter.name)
        else:
            adapter = self._get(model)
            if adapter is not None:
                return Target(model, adapter, adapter.default_collection, adapter.name)
        available = self.model_ids()
        raise NotFoundError(
            f"The model `{model}` does not exist. Available models: {', '.join(available)}",
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
                async with self._drained:
                    self._drained.notify_all()

    def public(self, version: AdapterVersion) -> AdapterPublic:
        latest = self._latest(version.name)
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
            aliases=sorted(a for a, rec in self._data.aliases.items() if rec.target == version.ref),
            created_at=version.created_at,
            replicas=states,
        )

    def list_public(self, ref: str | None = None) -> list[AdapterPublic]:
        versions = self.versions()
        if ref is not None:
            name, sep, _ = ref.partition("@")
            one = self._get(ref) if sep else None
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
            default_collection=record.default_collection,
            updated_at=record.updated_at,
        )

    # ---- engine operations -----------------------------------------------------------------------------------

    async def _base_model_dir(self) -> Path:
        if self._base_dir is None:
            from ragswap.model_store import ModelStoreError, resolve_model

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

    async def _load_on(self, replica: Replica, version: AdapterVersion) -> None:
        try:
            await self.pool.engine_call(
                replica,
                "/v1/load_lora_adapter",
                {"lora_name": version.engine_name, "lora_path": version.path},
                f"loading {version.ref}",
            )
        except BadRequestError:
            # Already loaded there (e.g. by a previous gateway run)? Then that is success, else re-raise.
            if version.engine_name not in await self.pool.engine_models(replica):
                raise
        replica.loaded.add(version.engine_name)
        replica.failed_adapters.pop(version.engine_name, None)

    async def _unload_on(self, replica: Replica, engine_name: str) -> None:
        try:
            await self.pool.engine_call(
                replica, "/v1/unload_lora_adapter", {"lora_name": engine_name}, f"unloading {engine_name}"
            )
        except GatewayError as exc:
            if engine_name in await self.pool.engine_models(replica):
                logger.warning("unload failed", extra={"replica": replica.index, "error": exc.message})
                raise
        replica.loaded.discard(engine_name)

    async def _load_everywhere(self, version: AdapterVersion) -> None:
        """Load on every healthy replica; if one fails, unload it from the others and raise that failure."""
        replicas = [r for r in self.pool.replicas if r.healthy]
        results = await asyncio.gather(*(self._load_on(r, version) for r in replicas), return_exceptions=True)
        failures = [res for res in results if isinstance(res, BaseException)]
        if not failures:
            return
        done = [r for r, res in zip(replicas, results, strict=True) if not isinstance(res, BaseException)]
        await asyncio.gather(*(self._unload_on(r, version.engine_name) for r in done), return_exceptions=True)
        first = failures[0]
        if isinstance(first, GatewayError):
            raise first
        raise first

    async def reconcile(self, replica: Replica) -> None:
        """Load every registered version the replica does not hold (after a restart, or when it joins)."""
        replica.loaded = await self.pool.engine_models(replica)
        for version in self.versions():
            if version.engine_name in replica.loaded:
                continue
            async with self._name_locks[version.name]:
                if self._get(version.ref) is None:
                    continue  # removed meanwhile
                try:
                    await self._load_on(replica, version)
                    logger.info(
                        "adapter re-applied", extra={"replica": replica.index, "adapter": version.ref}
                    )
                except GatewayError as exc:
                    replica.failed_adapters[version.engine_name] = exc.message
                    logger.warning(
                        "adapter could not be re-applied",
                        extra={"replica": replica.index, "adapter": version.ref, "error": exc.message},
                    )

    # ---- changes ---------------------------------------------------------------------------------------------

    def _check_alias_names(self, aliases: list[str], adapter_name: str) -> None:
        for alias in aliases:
            if alias == self.base_name or alias in self._data.adapters or alias == adapter_name:
                raise ConflictError(
                    f"alias `{alias}` would shadow a model or adapter name",
                    param="aliases",
                    code="name_taken",
                )

    async def register(self, request: AdapterCreate) -> AdapterVersion:
        """Validate, load on every replica, then persist; 4xx and an unchanged registry on any failure."""
        name = request.name
        if not self.settings.engine.enable_lora:
            raise ConflictError(
                "the engines run with LoRA disabled (engine.enable_lora=false)", code="lora_disabled"
            )
        if name == self.base_name or name in self._data.aliases:
            raise ConflictError(f"`{name}` is already a model or alias name", param="name", code="name_taken")
        self._check_alias_names(request.aliases, name)
        path = resolve_adapter_path(request.path, list(self.settings.server.adapter_roots))
        base_dir = await self._base_model_dir()
        info = await asyncio.to_thread(validate_adapter, path, base_dir, self.settings.engine.max_lora_rank)
        async with self._name_locks[name]:
            existing = self._data.adapters.get(name, {})
            version_no = request.version or (max(existing) + 1 if existing else 1)
            if version_no in existing:
                raise ConflictError(
                    f"`{name}@{version_no}` is already registered; remove it first or pick another version",
                    param="version",
                    code="version_exists",
                )
            async with self._state_lock:
                version_id = self._data.next_id
                self._data = self._data.model_copy(update={"next_id": version_id + 1})
            version = AdapterVersion(
                id=version_id,
                name=name,
                version=version_no,
                path=str(info.path),
                rank=info.rank,
                target_modules=info.target_modules,
                base_check=info.base_check,
                default_collection=request.default_collection,
                created_at=_now(),
            )
            await self._load_everywhere(version)
            try:
                async with self._state_lock:
                    data = self._data.model_copy(deep=True)
                    self._check_alias_names(request.aliases, name)
                    data.adapters.setdefault(name, {})[version_no] = version
                    for alias in request.aliases:
                        data.aliases[alias] = AliasRecord(target=version.ref, updated_at=_now())
                    await self._save(data)
            except BaseException:
                await asyncio.gather(
                    *(self._unload_on(r, version.engine_name) for r in self.pool.replicas if r.healthy),
                    return_exceptions=True,
                )
                raise
        self.pool.metrics.adapter_ops.labels("register", "ok").inc()
        logger.info(
            "adapter registered", extra={"adapter": version.ref, "id": version.id, "path": version.path}
        )
        return version

    async def remove(self, ref: str, force: bool = False) -> tuple[list[str], list[str]]:
        """Remove ``name`` (all versions) or ``name@version``: stop routing to it, drain, unload everywhere."""
        name, sep, ver = ref.partition("@")
        async with self._name_locks[name]:
            versions = self._data.adapters.get(name, {})
            if sep:
                chosen = [versions[int(ver)]] if ver.isdigit() and int(ver) in versions else []
            else:
                chosen = list(versions.values())
            if not chosen:
                raise NotFoundError(
                    f"adapter `{ref}` is not registered", param="name", code="adapter_not_found"
                )
            refs = {v.ref for v in chosen}
            async with self._state_lock:
                data = self._data.model_copy(deep=True)
                pinned = sorted(a for a, rec in data.aliases.items() if rec.target in refs)
                if pinned and not force:
                    raise ConflictError(
                        f"aliases {pinned} point at {sorted(refs)}; move them first or pass force=true",
                        param="name",
                        code="adapter_in_use",
                    )
                for alias in pinned:
                    del data.aliases[alias]
                for version in chosen:
                    del data.adapters[name][version.version]
                if not data.adapters[name]:
                    del data.adapters[name]
                await self._save(data)
            for version in chosen:
                await self._drain(version.engine_name)
                await asyncio.gather(
                    *(self._unload_on(r, version.engine_name) for r in self.pool.replicas if r.healthy),
                    return_exceptions=True,
                )
        self.pool.metrics.adapter_ops.labels("remove", "ok").inc()
        logger.info("adapter removed", extra={"adapters": sorted(refs), "aliases_removed": pinned})
        return sorted(refs), pinned

    async def _drain(self, engine_name: str) -> None:
        timeout = self.settings.server.drain_timeout_s
        async with self._drained:
            try:
                await asyncio.wait_for(
                    self._drained.wait_for(lambda: self._inflight[engine_name] <= 0), timeout=timeout
                )
            except TimeoutError:
                logger.warning("unloading with requests still in flight", extra={"adapter": engine_name})

    async def set_alias(self, alias: str, target: str, default_collection: str | None) -> AliasRecord:
        if alias == self.base_name or alias in self._data.adapters:
            raise ConflictError(f"`{alias}` is a model or adapter name", param="alias", code="name_taken")
        async with self._state_lock:
            version = self._get(target)
            if version is None:
                raise NotFoundError(
                    f"alias target `{target}` is not a registered adapter",
                    param="target",
                    code="adapter_not_found",
                )
            data = self._data.model_copy(deep=True)
            record = AliasRecord(target=version.ref, default_collection=default_collection, updated_at=_now())
            data.aliases[alias] = record
            await self._save(data)
        self.pool.metrics.adapter_ops.labels("alias", "ok").inc()
        logger.info("alias set", extra={"alias": alias, "target": version.ref})
        return record

    async def delete_alias(self, alias: str) -> None:
        async with self._state_lock:
            if alias not in self._data.aliases:
                raise NotFoundError(f"alias `{alias}` does not exist", param="alias", code="alias_not_found")
            data = self._data.model_copy(deep=True)
            del data.aliases[alias]
            await self._save(data)
