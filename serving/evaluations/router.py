"""``/v1/evaluations``: queue, watch and cancel evaluation jobs, read their results and report.

The module's ``lifespan`` builds the service on the gateway's control plane and, where ``worker.embedded`` says
so (the embedded SQLite default), starts one evaluation worker beside the gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, status
from fastapi.responses import HTMLResponse

from eval import GateError, GateOptions, GateResult, evaluate_gate
from serving.deps import ApiKeyDep, RegistryDep
from serving.errors import BadRequestError, ForbiddenError
from serving.evaluations.protocol import EvaluationCreate, EvaluationList, EvaluationPublic, EvaluationResults
from serving.evaluations.service import EvaluationService
from serving.references import check_collection, check_model, check_models

router = APIRouter(tags=["evaluations"])
REPORT_HEADERS = {
    # The report is self-contained (inline CSS, base64 PNGs, no script): nothing else may load from it.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
JobId = Annotated[str, Path(min_length=1, max_length=100)]


def get_evaluations(request: Request) -> EvaluationService:
    service: EvaluationService = request.app.state.evaluations
    return service


EvaluationsDep = Annotated[EvaluationService, Depends(get_evaluations)]


@router.post("/v1/evaluations", status_code=status.HTTP_202_ACCEPTED, response_model=EvaluationPublic)
async def create_evaluation(
    body: EvaluationCreate,
    principal: ApiKeyDep,
    service: EvaluationsDep,
    registry: RegistryDep,
    request: Request,
) -> EvaluationPublic:
    if body.judge.url and not principal.admin:
        # The gateway would call that URL on the caller's behalf: only admins may point it elsewhere.
        raise ForbiddenError("judge.url needs an admin key", param="judge.url", code="admin_required")
    if not body.score_only:  # score-only configs only name the answers already in the dataset
        check_models(registry, body.adapters, "adapters")
    if body.judge.url is None and body.judge.model is not None:
        check_model(registry, body.judge.model, "judge.model")
    await check_collection(getattr(request.app.state, "retrieval", None), body.collection, "collection")
    return await service.create(body, created_by=principal.key_hint)


@router.get("/v1/evaluations", response_model=EvaluationList)
async def list_evaluations(_: ApiKeyDep, service: EvaluationsDep) -> EvaluationList:
    return EvaluationList(data=await service.list())


@router.get("/v1/evaluations/{job_id}", response_model=EvaluationPublic)
async def get_evaluation(job_id: JobId, _: ApiKeyDep, service: EvaluationsDep) -> EvaluationPublic:
    return await service.get(job_id)


@router.get("/v1/evaluations/{job_id}/results", response_model=EvaluationResults)
async def get_results(
    job_id: JobId,
    _: ApiKeyDep,
    service: EvaluationsDep,
    traces: Annotated[bool, Query(description="Include every per-sample trace.")] = False,
) -> EvaluationResults:
    return await service.results(job_id, traces)


@router.get("/v1/evaluations/{job_id}/report", response_class=HTMLResponse)
async def get_report(job_id: JobId, _: ApiKeyDep, service: EvaluationsDep) -> HTMLResponse:
    """The HTML report of a finished job (the same one ``ragswap eval run`` writes), rendered from the database."""
    headers = {**REPORT_HEADERS, "Content-Disposition": f'inline; filename="report-{job_id}.html"'}
    return HTMLResponse(await service.report(job_id), headers=headers)


@router.post("/v1/evaluations/{job_id}/gate", response_model=GateResult)
async def gate_evaluation(
    job_id: JobId, body: GateOptions, _: ApiKeyDep, service: EvaluationsDep
) -> GateResult:
    """The CI gate on the job's summary (200 with ``passed`` true or false; 409 until the job succeeded)."""
    summary = (await service.results(job_id, False)).summary
    try:
        return evaluate_gate(summary, body)
    except GateError as exc:
        raise BadRequestError(str(exc), param="require", code="invalid_gate") from exc


@router.post("/v1/evaluations/{job_id}/cancel", response_model=EvaluationPublic)
async def cancel_evaluation(job_id: JobId, _: ApiKeyDep, service: EvaluationsDep) -> EvaluationPublic:
    return await service.cancel(job_id)


@router.delete("/v1/evaluations/{job_id}", response_model=EvaluationPublic)
async def delete_evaluation(job_id: JobId, _: ApiKeyDep, service: EvaluationsDep) -> EvaluationPublic:
    """Same as ``POST .../cancel`` (the job's record and results stay)."""
    return await service.cancel(job_id)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The service, plus the embedded worker if any (stopped first on shutdown: its job goes back to the queue)."""
    from serving.evaluations.worker import EmbeddedWorkerProcess, EmbeddedWorkerThread, embedded_mode

    settings = app.state.settings
    plane = app.state.controlplane
    mode = embedded_mode(settings, plane.db.dialect)
    worker: EmbeddedWorkerProcess | EmbeddedWorkerThread | None = None
    if mode == "process":
        worker = EmbeddedWorkerProcess(settings)
    elif mode == "thread":
        worker = EmbeddedWorkerThread(settings, plane)
    service = EvaluationService(settings, plane, on_enqueue=worker.wake if worker else None)
    app.state.evaluations = service
    if worker is None:
        yield
        return

    stopped = False

    async def stop_worker() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            await asyncio.to_thread(worker.stop)

    await asyncio.to_thread(worker.start)
    # Stopped before the gateway stops accepting connections (serving.server.GatewayServer), so that the job it
    # runs is handed back to the queue instead of seeing its requests refused.
    app.state.before_shutdown = [*getattr(app.state, "before_shutdown", []), stop_worker]
    try:
        yield
    finally:
        await stop_worker()


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
