"""Text completions: resolve the model and proxy to a replica (no chat template, no RAG)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from serving.adapters.registry import AdapterRegistry, Target
from serving.completions.protocol import CompletionRequest
from serving.proxy import EngineProxy

ENDPOINT = "completions"
PATH = "/v1/completions"


class CompletionService:
    def __init__(self, proxy: EngineProxy, registry: AdapterRegistry) -> None:
        self.proxy = proxy
        self.registry = registry

    async def create(self, request: CompletionRequest, target: Target) -> dict[str, Any]:
        return await self.proxy.complete(ENDPOINT, PATH, target, request.engine_body(""))

    async def stream(self, request: CompletionRequest, target: Target) -> AsyncIterator[str]:
        return await self.proxy.open_stream(
            ENDPOINT, PATH, target, request.engine_body(""), client_usage=request.wants_usage_chunk
        )
