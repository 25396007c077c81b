"""Chat completions: resolve the model, ground with RAG when asked (or bound), proxy to a replica."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from serving.adapters.registry import AdapterRegistry, Target
from serving.chat.protocol import ChatCompletionRequest
from serving.chat.rag import RagAugmenter
from serving.chat.shadow import Mirrored, Served, ShadowMirror
from serving.errors import BadRequestError
from serving.proxy import EngineProxy

logger = logging.getLogger(__name__)
prompt_logger = logging.getLogger("serving.prompts")

ENDPOINT = "chat"
PATH = "/v1/chat/completions"


class ChatService:
    def __init__(
        self,
        proxy: EngineProxy,
        registry: AdapterRegistry,
        augmenter: RagAugmenter | None,
        log_prompts: bool = False,
        shadow: ShadowMirror | None = None,
    ) -> None:
        self.proxy = proxy
        self.registry = registry
        self.augmenter = augmenter
        self.log_prompts = log_prompts
        self.shadow = shadow

    def _rag_options(self, request: ChatCompletionRequest, target: Target) -> dict[str, Any] | None:
        if request.rag is None:
            return {"collection": target.default_collection} if target.default_collection else None
        options = request.rag.model_dump(exclude_none=True)
        options.setdefault("collection", target.default_collection)
        if not options.get("collection"):
            raise BadRequestError(
                f"rag.collection is required: model `{request.model}` has no default collection",
                param="rag.collection",
            )
        return options

    async def _prepare(
        self, request: ChatCompletionRequest, target: Target
    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]] | None]:
        messages = request.message_dicts()
        citations: list[dict[str, Any]] | None = None
        options = self._rag_options(request, target)
        if options is not None:
            if self.augmenter is None:
                if request.rag is not None:
                    raise BadRequestError(
                        "this gateway has no retrieval configured: `rag` cannot be used", param="rag"
                    )
                logger.warning(
                    "default collection bound but no retrieval configured; answering ungrounded",
                    extra={"model": target.canonical},
                )
            else:
                messages, citations = await self.augmenter.augment(messages, options, request.model)
        if self.log_prompts:
            prompt_logger.info("prompt", extra={"model": target.canonical, "messages": messages})
        body = request.engine_body("", exclude={"rag", "messages"})
        body["messages"] = messages
        return body, messages, citations

    async def create(self, request: ChatCompletionRequest, target: Target) -> dict[str, Any]:
        """Answer ``request`` with ``target`` (``registry.resolve`` of its model: the router resolves it first, so
        it can name the concrete version in the response headers)."""
        body, messages, citations = await self._prepare(request, target)
        candidate = self.shadow.candidate(target) if self.shadow is not None else None
        started = time.perf_counter()
        data = await self.proxy.complete(ENDPOINT, PATH, target, body)
        if candidate is not None and self.shadow is not None:
            answer = str(((data.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
            served = Served(answer, time.perf_counter() - started, citations)
            self.shadow.mirror(Mirrored(target, candidate, body, messages, served, stream=False))
        if citations is not None:
            for choice in data.get("choices", []):
                choice.setdefault("message", {})["citations"] = citations
        return data

    async def stream(self, request: ChatCompletionRequest, target: Target) -> AsyncIterator[str]:
        body, messages, citations = await self._prepare(request, target)
        tail = [{"citations": citations}] if citations is not None else None
        candidate = self.shadow.candidate(target) if self.shadow is not None else None
        started = time.perf_counter()
        events = await self.proxy.open_stream(
            ENDPOINT, PATH, target, body, client_usage=request.wants_usage_chunk, tail=tail
        )
        shadow = self.shadow
        if candidate is None or shadow is None:
            return events
        return shadow.capture_stream(
            events,
            lambda served: shadow.mirror(Mirrored(target, candidate, body, messages, served, stream=True)),
            started,
        )
