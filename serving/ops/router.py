"""``/health`` (the process answers), ``/ready`` (≥1 replica serves), ``/load`` (interactive requests in flight),
``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import ApiKeyDep, MetricsDep, PoolDep
from serving.ops.protocol import LoadStatus, ReadyStatus, ReplicaList, ReplicaPublic, ReplicaReadiness

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=ReadyStatus,
    responses={503: {"model": ReadyStatus, "description": "No replica serves (starting, restarting, down)"}},
)
async def ready(pool: PoolDep) -> JSONResponse:
    """Whether the gateway can answer inference requests now: each replica's state, nothing internal (details
    with a key: ``GET /v1/replicas``). It flips within milliseconds of an engine dying."""
    status = ReadyStatus(
        status="ready" if pool.ready_replicas() else "not_ready",
        ready_replicas=len(pool.ready_replicas()),
        replicas=[ReplicaReadiness(replica=r.index, state=r.state, ready=r.ready) for r in pool.replicas],
    )
    return JSONResponse(status_code=200 if status.ready_replicas else 503, content=status.model_dump())


@router.get("/load", response_model=LoadStatus)
async def load(request: Request) -> LoadStatus:
    """Interactive requests in flight (evaluation traffic not counted): embedded evaluation workers poll it and
    pause between samples while serving is busy (``worker.yield_to_serving``). No key needed, like ``/ready``."""
    state = request.app.state.load
    idle = state.idle_s()
    return LoadStatus(interactive_in_flight=state.in_flight, idle_s=None if idle is None else round(idle, 3))


@router.get("/v1/replicas", response_model=ReplicaList)
async def list_replicas(_: ApiKeyDep, pool: PoolDep) -> ReplicaList:
    """Every engine replica with its state and the adapters it holds (needs an API key: URLs are internal)."""
    return ReplicaList(
        data=[
            ReplicaPublic(
                replica=r.index,
                url=r.url,
                state=r.state,
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


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(m: MetricsDep) -> Response:
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
