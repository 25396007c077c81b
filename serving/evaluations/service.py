"""Evaluation jobs, as the gateway sees them: rows of the control-plane queue it enqueues, reports and cancels.

Workers (:mod:`serving.evaluations.worker`: ``ragswap worker`` processes, or the one ``ragswap serve`` runs beside
an embedded database) claim queued jobs, run them against the gateway like any client, and store each scored
sample as a trace row; nothing per-sample runs on the gateway's event loop. Results and the HTML report are
built from the database on request, so any gateway answers for any job.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import TYPE_CHECKING, Any

from serving.controlplane import db_call
from serving.errors import BadRequestError, ConflictError
from serving.evaluations.protocol import EvaluationCreate, EvaluationPublic, EvaluationResults, Progress

if TYPE_CHECKING:
    from collections.abc import Callable

    from controlplane import ControlPlane, JobRecord
    from ragswap import Settings

logger = logging.getLogger(__name__)

_RENDER_LOCK = threading.Lock()
"""pyplot keeps global state: one report rendered at a time."""


def public(record: JobRecord) -> EvaluationPublic:
    def stamp(value: float | None) -> int | None:
        return int(value) if value is not None else None

    return EvaluationPublic(
        id=record.id,
        status=record.status,  # type: ignore[arg-type]
        name=record.name,
        configs=record.configs,
        metrics=record.metrics,
        progress=Progress(done=record.done, total=record.total),
        created_at=int(record.created_at),
        started_at=stamp(record.started_at),
        finished_at=stamp(record.finished_at),
        resumed=record.resumed,
        attempts=record.attempts,
        worker=record.worker,
        error=record.error,
    )


class EvaluationService:
    """Enqueue, list, cancel and report evaluation jobs of the control plane.

    Args:
        on_enqueue: called after a job was queued (wakes an embedded worker at once instead of at its next poll).
    """

    def __init__(
        self, settings: Settings, plane: ControlPlane, on_enqueue: Callable[[], None] | None = None
    ) -> None:
        self.settings = settings
        self.plane = plane
        self.on_enqueue = on_enqueue

    def _request(self, body: EvaluationCreate) -> dict[str, Any]:
        try:
            request = body.to_eval_request()
        except ValueError as exc:
            raise BadRequestError(str(exc), param="dataset", code="invalid_dataset") from exc
        configs = request.configs(self.settings.models.base_model)
        return {
            "request": request.model_dump(mode="json"),
            "name": body.name,
            "configs": [c.name for c in configs],
            "metrics": request.metrics or list(self.settings.eval.metrics),
            "total": len(configs) * len(request.samples),
        }

    async def create(self, body: EvaluationCreate, created_by: str | None = None) -> EvaluationPublic:
        fields = await asyncio.to_thread(self._request, body)  # parsing thousands of rows is CPU work
        job_id = f"eval-{uuid.uuid4().hex[:16]}"
        record = await db_call(self.plane, self.plane.jobs.enqueue, job_id, created_by=created_by, **fields)
        logger.info("evaluation job queued", extra={"job": job_id, "samples": record.total})
        if self.on_enqueue is not None:
            self.on_enqueue()
        return public(record)

    async def get(self, job_id: str) -> EvaluationPublic:
        return public(await db_call(self.plane, self.plane.jobs.get, job_id))

    async def list(self) -> list[EvaluationPublic]:
        return [public(r) for r in await db_call(self.plane, self.plane.jobs.recent)]

    async def cancel(self, job_id: str) -> EvaluationPublic:
        """Cancelled at once; a worker running it stops at its next write (it cannot store anything more)."""
        record = await db_call(self.plane, self.plane.jobs.cancel, job_id)
        logger.info("evaluation job cancelled", extra={"job": job_id, "worker": record.worker})
        return public(record)

    async def _finished(self, job_id: str) -> dict[str, Any]:
        record = await db_call(self.plane, self.plane.jobs.get, job_id)
        summary = await db_call(self.plane, self.plane.jobs.summary, job_id) if record.has_summary else None
        if record.status != "succeeded" or summary is None:
            raise ConflictError(
                f"evaluation {job_id!r} has no results: it is {record.status}"
                + (f" ({record.error})" if record.error else ""),
                param="id",
                code="evaluation_not_finished",
            )
        return summary

    async def results(self, job_id: str, include_traces: bool) -> EvaluationResults:
        from eval import RunSummary, SampleTrace

        summary = await self._finished(job_id)
        traces: list[SampleTrace] | None = None
        if include_traces:
            rows = await db_call(self.plane, self.plane.jobs.traces, job_id)
            traces = await asyncio.to_thread(lambda: [SampleTrace.model_validate(t) for t in rows])
        return EvaluationResults(id=job_id, summary=RunSummary.model_validate(summary), traces=traces)

    async def report(self, job_id: str) -> str:
        """The job's HTML report (the one ``ragswap eval run`` writes as ``report.html``), rendered now."""
        from eval import RunSummary, SampleTrace, render_report

        summary = await self._finished(job_id)
        rows = await db_call(self.plane, self.plane.jobs.traces, job_id)

        def render() -> str:
            traces = [SampleTrace.model_validate(t) for t in rows]
            with _RENDER_LOCK:
                return str(render_report(RunSummary.model_validate(summary), traces))

        return await asyncio.to_thread(render)
