"""``/v1/evaluations``: start, watch, cancel evaluation jobs and read their results."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, status

from eval import GateError, GateOptions, GateResult, evaluate_gate
from serving.deps import ApiKeyDep
from serving.errors import BadRequestError, ForbiddenError
from serving.evaluations.protocol import EvaluationCreate, EvaluationList, EvaluationPublic, EvaluationResults
from serving.evaluations.service import EvaluationService

router = APIRouter(tags=["evaluations"])
JobId = Annotated[str, Path(min_length=1, max_length=100)]


def get_evaluations(request: Request) -> EvaluationService:
    service: EvaluationService = request.app.state.evaluations
    return service


EvaluationsDep = Annotated[EvaluationService, Depends(get_evaluations)]


@router.post("/v1/evaluations", status_code=status.HTTP_202_ACCEPTED, response_model=EvaluationPublic)
async def create_evaluation(
    body: EvaluationCreate, principal: ApiKeyDep, service: EvaluationsDep
) -> EvaluationPublic:
    if body.judge.url and not principal.admin:
        # The gateway would call that URL on the caller's behalf: only admins may point it elsewhere.
        raise ForbiddenError("judge.url needs an admin key", param="judge.url", code="admin_required")
    return service.create(body)


@router.get("/v1/evaluations", response_model=EvaluationList)
async def list_evaluations(_: ApiKeyDep, service: EvaluationsDep) -> EvaluationList:
    return EvaluationList(data=service.list())


@router.get("/v1/evaluations/{job_id}", response_model=EvaluationPublic)
async def get_evaluation(job_id: JobId, _: ApiKeyDep, service: EvaluationsDep) -> EvaluationPublic:
    return service.get(job_id).public()


@router.get("/v1/evaluations/{job_id}/results", response_model=EvaluationResults)
async def get_results(
    job_id: JobId,
    _: ApiKeyDep,
    service: EvaluationsDep,
    traces: Annotated[bool, Query(description="Include every per-sample trace.")] = False,
) -> EvaluationResults:
    return service.results(job_id, traces)


@router.post("/v1/evaluations/{job_id}/gate", response_model=GateResult)
async def gate_evaluation(
    job_id: JobId, body: GateOptions, _: ApiKeyDep, service: EvaluationsDep
) -> GateResult:
    """The CI gate on the job's summary (200 with ``passed`` true or false; 409 until the job succeeded)."""
    summary = service.results(job_id, False).summary
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
    """Load persisted jobs, resume interrupted ones; on shutdown cancel running tasks (they resume next start)."""
    settings = app.state.settings
    keys = [k.get_secret_value() for k in (*settings.server.api_keys, *settings.server.admin_keys)]
    service = EvaluationService(settings, app=app, api_key=keys[0] if keys else None)
    app.state.evaluations = service
    await service.start()
    try:
        yield
    finally:
        await service.stop()


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
