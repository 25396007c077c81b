"""``POST /v1/completions``."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from serving.chat.router import SSE_HEADERS, route
from serving.completions.protocol import CompletionRequest, CompletionResponse
from serving.completions.service import CompletionService
from serving.deps import ApiKeyDep, ProxyDep, RegistryDep
from serving.middleware import until_disconnected
from serving.openapi import inference_responses

router = APIRouter(tags=["completions"])


@router.post(
    "/v1/completions",
    name="completions",
    response_model=None,
    responses=inference_responses(CompletionResponse),
)
async def create_completion(
    body: CompletionRequest, request: Request, principal: ApiKeyDep, proxy: ProxyDep, registry: RegistryDep
) -> JSONResponse | StreamingResponse:
    service = CompletionService(proxy, registry)
    target, headers = route(request, registry, body, principal.key_hint)
    body.apply_token_limits(principal.limits)
    if body.stream:
        events = await service.stream(body, target)
        return StreamingResponse(events, media_type="text/event-stream", headers={**SSE_HEADERS, **headers})
    return JSONResponse(await until_disconnected(request, service.create(body, target)), headers=headers)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
