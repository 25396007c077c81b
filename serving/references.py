"""Requests that name other things (an adapter's default collection, an evaluation's adapters) are checked when
they are given: a reference to nothing is a 4xx naming the field then, not a failure later (every chat request to
the adapter, every sample of the evaluation).

The routers call these before handing the request to their service; they read the registry and the retrieval
gateway through their public lookups only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from serving.errors import GatewayError, NotFoundError, ServiceUnavailableError


class ModelResolver(Protocol):
    def resolve(self, model: str) -> Any: ...


class CollectionLookup(Protocol):
    async def describe(self, name: str) -> Any: ...


def check_model(registry: ModelResolver, name: str, param: str) -> None:
    """``name`` is the base model, an adapter, ``name@version`` or an alias; else 404 naming ``param``."""
    try:
        registry.resolve(name)
    except NotFoundError as exc:
        raise NotFoundError(exc.message, param=param, code="model_not_found") from exc


def check_models(registry: ModelResolver, names: Iterable[str], param: str) -> None:
    """:func:`check_model` for each name of a list field (``param.<index>`` names the bad one)."""
    for index, name in enumerate(names):
        check_model(registry, name, f"{param}.{index}")


async def check_collection(retrieval: CollectionLookup | None, name: str | None, param: str) -> None:
    """``name`` (when given) is an existing retrieval collection; else 404 (503 when retrieval is off)."""
    if name is None:
        return
    if retrieval is None:
        raise ServiceUnavailableError(
            f"retrieval is not available on this gateway, so collection `{name}` cannot be used",
            param=param,
            code="retrieval_off",
        )
    try:
        await retrieval.describe(name)
    except NotFoundError as exc:
        raise NotFoundError(
            f"collection `{name}` does not exist; create it first (POST /v1/collections)",
            param=param,
            code="collection_not_found",
        ) from exc
    except GatewayError as exc:  # e.g. not a valid collection name
        if exc.status_code >= 500:
            raise
        raise type(exc)(exc.message, param=param, code=exc.code) from exc
