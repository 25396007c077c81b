"""``/v1/aliases/{name}/promotions``: start an evaluation-gated promotion (admin), watch it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Request, status

from serving.adapters.router import AliasPath
from serving.deps import AdminDep, ApiKeyDep
from serving.promotions.protocol import PromotionCreate, PromotionList, PromotionPublic
from serving.promotions.service import PromotionService
from serving.references import check_collection

router = APIRouter(tags=["adapters"])


def get_promotions(request: Request) -> PromotionService:
    service: PromotionService = request.app.state.promotions
    return service


PromotionsDep = Annotated[PromotionService, Depends(get_promotions)]


@router.post(
    "/v1/aliases/{alias}/promotions", status_code=status.HTTP_202_ACCEPTED, response_model=PromotionPublic
)
async def create_promotion(
    alias: AliasPath, body: PromotionCreate, principal: AdminDep, service: PromotionsDep, request: Request
) -> PromotionPublic:
    """Evaluate the candidate against the alias's current target; the alias moves only if the gate passes."""
    await check_collection(getattr(request.app.state, "retrieval", None), body.collection, "collection")
    return await service.start(alias, body, principal.key_hint)


@router.get("/v1/aliases/{alias}/promotions", response_model=PromotionList)
async def list_promotions(alias: AliasPath, _: ApiKeyDep, service: PromotionsDep) -> PromotionList:
    """The promotions this gateway ran for the alias (decisions of every gateway are in its history)."""
    return PromotionList(data=service.list(alias))


@router.get("/v1/aliases/{alias}/promotions/{promotion_id}", response_model=PromotionPublic)
async def get_promotion(
    alias: AliasPath,
    promotion_id: Annotated[str, Path(min_length=1, max_length=100)],
    _: ApiKeyDep,
    service: PromotionsDep,
) -> PromotionPublic:
    return service.get(alias, promotion_id)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service = PromotionService(app.state.registry, app.state.evaluations, app.state.metrics)
    app.state.promotions = service
    try:
        yield
    finally:
        await service.stop()


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
