"""The gateway application factory.

``build_app(settings)`` wires everything once: in its lifespan it opens the control-plane database (migrated at
start), builds the engine pool, the adapter registry and the metrics, stores them on ``app.state``, then enters
the optional ``lifespan(app)`` hook of every router module in :data:`ROUTER_MODULES` (in order; exited in
reverse). Adding an endpoint family = one line in that list.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import ModuleType

import httpx
from fastapi import FastAPI

from ragswap import Settings
from serving.errors import install_error_handlers

logger = logging.getLogger(__name__)

# Each module exposes `attach_router(app)` and may expose `lifespan(app)` (an async context manager factory) to
# build and tear down its long-lived objects on app.state.
ROUTER_MODULES: list[str] = [
    "serving.ops.router",
    "serving.models.router",
    "serving.chat.router",
    "serving.completions.router",
    "serving.adapters.router",
    "serving.retrieval.router",
    "serving.evaluations.router",
    "serving.promotions.router",
    "serving.ops.insights.router",
    "serving.console.router",
]


def _modules() -> list[ModuleType]:
    return [importlib.import_module(name) for name in ROUTER_MODULES]


@asynccontextmanager
async def _core_lifespan(app: FastAPI) -> AsyncIterator[None]:
    from controlplane import instance_id
    from serving.adapters.registry import AdapterRegistry
    from serving.controlplane import open_control_plane
    from serving.engine.pool import EnginePool
    from serving.ops.metrics import GatewayMetrics
    from serving.proxy import EngineProxy

    settings: Settings = app.state.settings
    timeout = httpx.Timeout(settings.server.request_timeout_s, connect=5.0)
    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256)
    plane = await asyncio.to_thread(open_control_plane, settings)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        metrics = GatewayMetrics()
        pool = EnginePool(settings, http, metrics)
        registry = AdapterRegistry(settings, pool, plane, instance_id("gateway"))
        app.state.controlplane = plane
        app.state.http = http
        app.state.metrics = metrics
        app.state.pool = pool
        app.state.registry = registry
        app.state.proxy = EngineProxy(pool, registry, metrics)
        app.state.rag_augmenter = None
        pool.reconciler = registry.reconciler
        try:
            await registry.start()
            await pool.start()
            yield
        finally:
            await registry.stop()
            await pool.stop()
            await asyncio.to_thread(plane.close)


def build_app(settings: Settings) -> FastAPI:
    """The gateway for ``settings``; nothing starts until the ASGI lifespan runs (uvicorn, TestClient)."""
    from serving.middleware import install_middleware
    from serving.openapi import install_openapi

    modules = _modules()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(_core_lifespan(app))
            for module in modules:
                hook = getattr(module, "lifespan", None)
                if hook is not None:
                    await stack.enter_async_context(hook(app))
            logger.info("gateway started", extra={"modules": ROUTER_MODULES})
            yield
        logger.info("gateway stopped")

    app = FastAPI(
        title="ragswap gateway",
        description="OpenAI-compatible API over vLLM with hot-swappable LoRA adapters and RAG.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_middleware(app)
    for module in modules:
        module.attach_router(app)
    install_openapi(app)
    return app
