"""``GET /v1/models`` and ``GET /v1/models/{model}``."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, FastAPI

from serving.adapters.registry import AdapterRegistry
from serving.deps import ApiKeyDep, RegistryDep, SettingsDep
from serving.models.protocol import ModelCard, ModelList

router = APIRouter(tags=["models"])


def _cards(registry: AdapterRegistry, max_len: int) -> list[ModelCard]:
    base = registry.base_name
    cards = [ModelCard(id=base, root=base, max_model_len=max_len)]
    for model_id in registry.model_ids()[1:]:
        target = registry.resolve(model_id)
        assert target.adapter is not None
        created = int(datetime.fromisoformat(target.adapter.created_at).timestamp())
        cards.append(
            ModelCard(
                id=model_id, root=target.adapter.path, parent=base, created=created, max_model_len=max_len
            )
        )
    return cards


@router.get("/v1/models", response_model=ModelList)
async def list_models(_: ApiKeyDep, registry: RegistryDep, settings: SettingsDep) -> ModelList:
    return ModelList(data=_cards(registry, settings.engine.max_model_len))


@router.get("/v1/models/{model:path}", response_model=ModelCard)
async def get_model(model: str, _: ApiKeyDep, registry: RegistryDep, settings: SettingsDep) -> ModelCard:
    registry.resolve(model)  # 404 in OpenAI's shape when unknown
    return next(c for c in _cards(registry, settings.engine.max_model_len) if c.id == model)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
