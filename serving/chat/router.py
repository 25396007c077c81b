"""``POST /v1/chat/completions``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from serving.adapters.registry import AdapterRegistry, Target
from serving.adapters.routing import VERSION_HEADER, sticky_key
from serving.chat.protocol import ChatCompletionRequest, ChatCompletionResponse
from serving.chat.service import ChatService
from serving.chat.shadow import ShadowMirror
from serving.deps import ApiKeyDep, ProxyDep, RegistryDep, SettingsDep
from serving.middleware import until_disconnected
from serving.openapi import inference_responses
from serving.protocol import SamplingRequest

router = APIRouter(tags=["chat"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def route(
    request: Request, registry: AdapterRegistry, body: SamplingRequest, key_hint: str | None
) -> tuple[Target, dict[str, str]]:
    """Resolve an inference request's model (sticky by session or ``user`` on a weighted alias); returns the
    target and the response headers naming the concrete version, and puts both names into the access log."""
    target = registry.resolve(body.model, sticky_key(request, body.user))
    request.state.log_extra = {
        "model": body.model,
        "served_model": target.canonical,
        "stream": bool(body.stream),
        "key": key_hint,
    }
    return target, {VERSION_HEADER: target.canonical}


@router.post(
    "/v1/chat/completions",
    name="chat",
    response_model=None,
    responses=inference_responses(ChatCompletionResponse),
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    principal: ApiKeyDep,
    proxy: ProxyDep,
    registry: RegistryDep,
    settings: SettingsDep,
) -> JSONResponse | StreamingResponse:
    service = ChatService(
        proxy,
        registry,
        request.app.state.rag_augmenter,
        settings.server.log_prompts,
        request.app.state.shadow,
    )
    target, headers = route(request, registry, body, principal.key_hint)
    body.apply_token_limits(principal.limits)
    if body.stream:
        events = await service.stream(body, target)
        return StreamingResponse(events, media_type="text/event-stream", headers={**SSE_HEADERS, **headers})
    return JSONResponse(await until_disconnected(request, service.create(body, target)), headers=headers)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    server = app.state.settings.server
    registry: AdapterRegistry = app.state.registry
    shadow = ShadowMirror(
        app.state.proxy,
        registry,
        app.state.metrics,
        server.shadow_dir or server.state_dir / "shadow",
        server.shadow_max_in_flight,
        registry.instance,
    )
    app.state.shadow = shadow
    try:
        yield
    finally:
        await shadow.stop()


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
