"""``/health`` (the process answers), ``/ready`` (≥1 replica serves), ``/metrics`` (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import ApiKeyDep, MetricsDep, PoolDep
from serving.ops.protocol import ReplicaList, ReplicaPublic

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(pool: PoolDep) -> JSONResponse:
    replicas: list[dict[str, Any]] = [
        {
            "replica": r.index,
            "url": r.url,
            "healthy": r.healthy,
            "ready": r.ready,
            "outstanding": r.outstanding,
            "adapters": len(r.loaded),
            "restarts": r.restarts,
            "error": r.last_error,
        }
        for r in pool.replicas
    ]
    is_ready = any(r.ready for r in pool.replicas)
    return JSONResponse(
        status_code=200 if is_ready else 503,
        content={"status": "ready" if is_ready else "not_ready", "replicas": replicas},
    )


@router.get("/v1/replicas", response_model=ReplicaList)
async def list_replicas(_: ApiKeyDep, pool: PoolDep) -> ReplicaList:
    """Every engine replica with its state and the adapters it holds (needs an API key: URLs are internal)."""
    return ReplicaList(
        data=[
            ReplicaPublic(
                replica=r.index,
                url=r.url,
                state="ready" if r.ready else "syncing" if r.healthy else "unhealthy",
                healthy=r.healthy,
                ready=r.ready,
                outstanding=r.outstanding,
                adapters=sorted(r.loaded),
                failed_adapters=dict(r.failed_adapters),
                restarts=r.restarts,
                embedded=r.process is not None,
                error=r.last_error,
            )
            for r in pool.replicas
        ]
    )


@router.get("/metrics")
async def metrics(m: MetricsDep) -> Response:
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
