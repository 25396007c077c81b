"""Read-only views: ``/v1/whoami``, ``/v1/metrics/summary``, ``/v1/adapter-roots``, adapter manifests, evaluation
reports and run comparisons.

Every view needs an API key (the adapter roots an admin key: they reveal the file system). The ones built on other
endpoints call them in process as the caller (:mod:`serving.ops.insights.public_api`), so they see exactly what
the caller may see. The module's ``lifespan`` samples the gateway's metrics registry for the windowed summary.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request

from serving.deps import AdminDep, ApiKeyDep, SettingsDep
from serving.errors import BadRequestError, ServiceUnavailableError
from serving.ops.insights.metrics_window import MetricsHistory
from serving.ops.insights.protocol import (
    AdapterManifestView,
    AdapterSources,
    MetricsSummary,
    RunComparison,
    WhoAmI,
)
from serving.ops.insights.public_api import public_api
from serving.ops.insights.views import (
    compare_results,
    read_manifest,
    registered_paths,
    scan_adapter_sources,
)

router = APIRouter(tags=["operations"])
RefPath = Annotated[str, Path(min_length=1, max_length=200)]
JobId = Annotated[str, Path(min_length=1, max_length=100)]


def get_history(request: Request) -> MetricsHistory:
    history: MetricsHistory | None = getattr(request.app.state, "metrics_history", None)
    if history is None:
        raise ServiceUnavailableError("the metrics history is not running", code="metrics_history_off")
    return history


HistoryDep = Annotated[MetricsHistory, Depends(get_history)]


@router.get("/v1/whoami", response_model=WhoAmI)
async def whoami(principal: ApiKeyDep, settings: SettingsDep) -> WhoAmI:
    """The scope of the key this request carries: clients enable admin actions from it instead of probing."""
    server = settings.server
    return WhoAmI(
        role="admin" if principal.admin else "user",
        admin=principal.admin,
        key_hint=principal.key_hint,
        auth_required=bool(server.api_keys or server.admin_keys),
    )


@router.get("/v1/metrics/summary", response_model=MetricsSummary)
async def metrics_summary(
    _: ApiKeyDep,
    history: HistoryDep,
    window_s: Annotated[float, Query(ge=10, le=3600, description="Seconds to summarise.")] = 300,
) -> MetricsSummary:
    """Request rate, error rate, p50/p95 latency and TTFT per model over the last ``window_s`` seconds."""
    return await asyncio.to_thread(history.summary, window_s)


@router.get("/v1/adapter-roots", response_model=AdapterSources)
async def adapter_roots(request: Request, _: AdminDep, settings: SettingsDep) -> AdapterSources:
    """Adapter directories under ``server.adapter_roots`` (what ``POST /v1/adapters`` may register)."""
    async with public_api(request) as api:
        adapters = (await api.get("/v1/adapters"))["data"]
    return await asyncio.to_thread(
        scan_adapter_sources, list(settings.server.adapter_roots), registered_paths(adapters)
    )


@router.get("/v1/adapters/{ref}/manifest", response_model=AdapterManifestView)
async def adapter_manifest(ref: RefPath, request: Request, _: ApiKeyDep) -> AdapterManifestView:
    """The ``ragswap.json`` of ``name@version`` (or of the latest version of ``name``)."""
    async with public_api(request) as api:
        versions = (await api.get(f"/v1/adapters/{quote(ref, safe='@')}"))["data"]
    chosen = next((v for v in versions if v.get("latest")), versions[-1]) if "@" not in ref else versions[0]
    manifest, error = await asyncio.to_thread(read_manifest, str(chosen["path"]))
    return AdapterManifestView(model=chosen["model"], path=chosen["path"], manifest=manifest, error=error)


async def _results(request: Request, job_id: str) -> dict[str, Any]:
    async with public_api(request) as api:
        body: dict[str, Any] = await api.get(
            f"/v1/evaluations/{quote(job_id, safe='')}/results", {"traces": "true"}
        )
    return body


@router.get("/v1/evaluations/{a}/compare/{b}", response_model=RunComparison)
async def compare_evaluations(a: JobId, b: JobId, request: Request, _: ApiKeyDep) -> RunComparison:
    """B − A per paired config (same name, or one config each) and metric, paired over the samples."""
    if a == b:
        raise BadRequestError("compare two different evaluations", param="b", code="same_evaluation")
    results_a, results_b = await asyncio.gather(_results(request, a), _results(request, b))
    return await asyncio.to_thread(compare_results, results_a, results_b)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Sample the gateway's metrics registry for ``/v1/metrics/summary`` while the app runs."""
    history = MetricsHistory(app.state.metrics.registry)
    app.state.metrics_history = history
    task = asyncio.create_task(history.run(), name="metrics-history")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        app.state.metrics_history = None
