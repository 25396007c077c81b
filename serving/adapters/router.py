"""``/v1/adapters`` and ``/v1/aliases``: admin changes, listing with per-replica state."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Path, Query, Request, status

from serving.adapters.protocol import (
    AdapterCreate,
    AdapterDeleted,
    AdapterList,
    AdapterPublic,
    AliasHistory,
    AliasList,
    AliasPublic,
    AliasRollback,
    AliasUpdate,
    ShadowUpdate,
)
from serving.deps import AdminDep, ApiKeyDep, RegistryDep
from serving.references import check_collection

router = APIRouter(tags=["adapters"])
RefPath = Annotated[str, Path(min_length=1, max_length=200)]
AliasPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


@router.post("/v1/adapters", status_code=status.HTTP_201_CREATED, response_model=AdapterPublic)
async def create_adapter(
    body: AdapterCreate, principal: AdminDep, registry: RegistryDep, request: Request
) -> AdapterPublic:
    await check_collection(
        getattr(request.app.state, "retrieval", None), body.default_collection, "default_collection"
    )
    version = await registry.register(body, actor=principal.key_hint)
    return registry.public(version)


@router.get("/v1/adapters", response_model=AdapterList)
async def list_adapters(_: ApiKeyDep, registry: RegistryDep) -> AdapterList:
    return AdapterList(data=registry.list_public())


@router.get("/v1/adapters/{ref}", response_model=AdapterList)
async def get_adapter(ref: RefPath, _: ApiKeyDep, registry: RegistryDep) -> AdapterList:
    """All versions of ``name``, or the one ``name@version``."""
    return AdapterList(data=registry.list_public(ref))


@router.delete("/v1/adapters/{ref}", response_model=AdapterDeleted)
async def delete_adapter(
    ref: RefPath,
    principal: AdminDep,
    registry: RegistryDep,
    force: Annotated[bool, Query(description="Also remove aliases pointing at it.")] = False,
) -> AdapterDeleted:
    deleted, aliases = await registry.remove(ref, force=force, actor=principal.key_hint)
    return AdapterDeleted(deleted=deleted, removed_aliases=aliases)


@router.get("/v1/aliases", response_model=AliasList)
async def list_aliases(_: ApiKeyDep, registry: RegistryDep) -> AliasList:
    return AliasList(data=[registry.alias_public(a, r) for a, r in sorted(registry.aliases().items())])


@router.put("/v1/aliases/{alias}", response_model=AliasPublic)
async def put_alias(
    alias: AliasPath,
    body: AliasUpdate,
    principal: AdminDep,
    registry: RegistryDep,
    request: Request,
) -> AliasPublic:
    await check_collection(
        getattr(request.app.state, "retrieval", None), body.default_collection, "default_collection"
    )
    record = await registry.set_alias(
        alias, body.split(), body.default_collection, actor=principal.key_hint, reason=body.reason
    )
    return registry.alias_public(alias, record)


@router.get("/v1/aliases/{alias}/history", response_model=AliasHistory)
async def alias_history(
    alias: AliasPath,
    _: ApiKeyDep,
    registry: RegistryDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AliasHistory:
    """Every recorded change of the alias (who, when, old → new targets, why), newest first."""
    return AliasHistory(alias=alias, data=await registry.alias_history(alias, limit))


@router.post("/v1/aliases/{alias}/rollback", response_model=AliasPublic)
async def rollback_alias(
    alias: AliasPath, principal: AdminDep, registry: RegistryDep, body: AliasRollback | None = None
) -> AliasPublic:
    """Return the alias atomically to the target set it had before its latest change."""
    record = await registry.rollback_alias(
        alias, actor=principal.key_hint, reason=body.reason if body else None
    )
    return registry.alias_public(alias, record)


@router.put("/v1/aliases/{alias}/shadow", response_model=AliasPublic)
async def put_shadow(
    alias: AliasPath, body: ShadowUpdate, principal: AdminDep, registry: RegistryDep
) -> AliasPublic:
    """Mirror ``percent`` % of the alias's chat requests to ``candidate``; both answers go to the shadow capture,
    only the alias's own version's to the user."""
    record = await registry.set_shadow(
        alias, body.candidate, body.percent, actor=principal.key_hint, reason=body.reason
    )
    return registry.alias_public(alias, record)


@router.delete("/v1/aliases/{alias}/shadow", response_model=AliasPublic)
async def delete_shadow(
    alias: AliasPath, principal: AdminDep, registry: RegistryDep, body: AliasRollback | None = None
) -> AliasPublic:
    """Stop mirroring (captured rows stay where they are)."""
    record = await registry.set_shadow(
        alias, None, actor=principal.key_hint, reason=body.reason if body else None
    )
    return registry.alias_public(alias, record)


@router.delete("/v1/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_alias(alias: RefPath, principal: AdminDep, registry: RegistryDep) -> None:
    await registry.delete_alias(alias, actor=principal.key_hint)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
