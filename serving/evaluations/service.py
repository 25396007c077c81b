"""Evaluation jobs: asyncio tasks of the gateway, persisted under ``server.state_dir/evaluations``.

Each job is a directory ``<id>/`` with ``job.json`` (the record below, rewritten atomically on every change),
``request.json`` and the run directory ``run/`` (traces appended as samples finish). Jobs run one at a time (an
evaluation saturates a CPU machine). On shutdown a running job's task is cancelled and the job stays ``queued``
with what it has traced so far; on start every ``queued``/``running`` job is re-queued (``resumed`` + 1) and
continues where it stopped, because the runner skips (config, sample) pairs already traced.

The job reaches the platform the way a client would (``/v1/retrieve``, chat completions with ``rag``, the judge's
chat completions) but in-process, through an ASGI transport to this very app, with the first configured key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from eval.jobs import EvalRequest, prepare_run
from eval.records import SampleTrace
from eval.runner import read_summary, read_traces
from ragswap.config import Settings
from serving.errors import BadRequestError, ConflictError, NotFoundError
from serving.evaluations.protocol import (
    EvaluationCreate,
    EvaluationPublic,
    EvaluationResults,
    JobStatus,
    Progress,
)

logger = logging.getLogger(__name__)

FINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class JobRecord(BaseModel):
    """``job.json``."""

    id: str
    status: JobStatus
    name: str
    configs: list[str]
    metrics: list[str]
    progress: Progress
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    resumed: int = 0
    error: str | None = None

    def public(self) -> EvaluationPublic:
        return EvaluationPublic.model_validate(self.model_dump())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class EvaluationService:
    """Creates, runs, cancels and reports evaluation jobs; owns their asyncio tasks."""

    def __init__(self, settings: Settings, app: Any = None, api_key: str | None = None) -> None:
        self.settings = settings
        self.root = settings.server.state_dir / "evaluations"
        self.app = app
        self.api_key = api_key
        self.jobs: dict[str, JobRecord] = {}
        self.requests: dict[str, EvalRequest] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] = set()
        self._slot = asyncio.Semaphore(1)
        self._stopping = False

    # persistence ------------------------------------------------------------------------------------------
    def _dir(self, job_id: str) -> Path:
        return self.root / job_id

    def _save(self, record: JobRecord) -> None:
        _write_atomic(self._dir(record.id) / "job.json", record.model_dump_json(indent=2))

    def load(self) -> list[str]:
        """Read every job; return the ids to re-queue (interrupted by a stop or a crash)."""
        self.root.mkdir(parents=True, exist_ok=True)
        pending = []
        for path in sorted(self.root.glob("*/job.json")):
            try:
                record = JobRecord.model_validate_json(path.read_text(encoding="utf-8"))
                request = EvalRequest.model_validate_json(
                    (path.parent / "request.json").read_text(encoding="utf-8")
                )
            except (OSError, ValueError) as exc:
                logger.warning(
                    "skipping an unreadable evaluation job", extra={"path": str(path), "error": str(exc)}
                )
                continue
            self.jobs[record.id] = record
            self.requests[record.id] = request
            if record.status not in FINAL:
                record.status = "queued"
                record.resumed += 1
                self._save(record)
                pending.append(record.id)
        return pending

    # lifecycle --------------------------------------------------------------------------------------------
    async def start(self) -> None:
        pending = await asyncio.to_thread(self.load)
        for job_id in pending:
            logger.info("resuming evaluation job", extra={"job": job_id})
            self._schedule(job_id)

    async def stop(self) -> None:
        """Cancel running tasks; their jobs stay ``queued`` on disk and resume on the next start."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _schedule(self, job_id: str) -> None:
        task = asyncio.create_task(self._run(job_id), name=f"evaluation-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def _run(self, job_id: str) -> None:
        record = self.jobs[job_id]
        try:
            async with self._slot:
                record.status, record.started_at, record.error = "running", int(time.time()), None
                self._save(record)

                def progress(done: int, total: int) -> None:
                    record.progress = Progress(done=done, total=total)
                    self._save(record)

                prepared = prepare_run(
                    self.requests[job_id],
                    server_url="http://gateway",
                    api_key=self.api_key,
                    out=self._dir(job_id) / "run",
                    run_id=job_id,
                    asgi_app=self.app,
                    settings=self.settings,
                )
                await prepared.execute(progress)
            record.status = "succeeded"
        except asyncio.CancelledError:
            if job_id in self._cancelled or not self._stopping:
                record.status = "cancelled"
            else:
                record.status = "queued"  # the gateway is stopping: resume on the next start
                logger.info("evaluation job interrupted; it resumes on the next start", extra={"job": job_id})
            self._finish(record)
            raise
        except Exception as exc:
            logger.exception("evaluation job failed", extra={"job": job_id})
            record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
        self._finish(record)

    def _finish(self, record: JobRecord) -> None:
        if record.status in FINAL:
            record.finished_at = int(time.time())
        self._save(record)

    # operations -------------------------------------------------------------------------------------------
    def create(self, body: EvaluationCreate) -> EvaluationPublic:
        try:
            request = body.to_eval_request()
        except ValueError as exc:
            raise BadRequestError(str(exc), param="dataset", code="invalid_dataset") from exc
        job_id = f"eval-{uuid.uuid4().hex[:16]}"
        configs = request.configs(self.settings.models.base_model)
        record = JobRecord(
            id=job_id,
            status="queued",
            name=body.name,
            configs=[c.name for c in configs],
            metrics=request.metrics or list(self.settings.eval.metrics),
            progress=Progress(done=0, total=len(configs) * len(request.samples)),
            created_at=int(time.time()),
        )
        self._dir(job_id).mkdir(parents=True, exist_ok=True)
        _write_atomic(self._dir(job_id) / "request.json", request.model_dump_json())
        self.jobs[job_id], self.requests[job_id] = record, request
        self._save(record)
        self._schedule(job_id)
        return record.public()

    def get(self, job_id: str) -> JobRecord:
        record = self.jobs.get(job_id)
        if record is None:
            raise NotFoundError(f"evaluation {job_id!r} not found", param="id", code="evaluation_not_found")
        return record

    def list(self) -> list[EvaluationPublic]:
        return [r.public() for r in sorted(self.jobs.values(), key=lambda r: r.created_at, reverse=True)]

    async def cancel(self, job_id: str) -> EvaluationPublic:
        record = self.get(job_id)
        if record.status in FINAL:
            raise ConflictError(
                f"evaluation {job_id!r} already {record.status}", param="id", code="evaluation_finished"
            )
        self._cancelled.add(job_id)
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if record.status != "cancelled":
            record.status = "cancelled"
            self._finish(record)
        return record.public()

    def results(self, job_id: str, include_traces: bool) -> EvaluationResults:
        record = self.get(job_id)
        run_dir = self._dir(job_id) / "run"
        if record.status != "succeeded" or not (run_dir / "summary.json").is_file():
            raise ConflictError(
                f"evaluation {job_id!r} has no results: it is {record.status}"
                + (f" ({record.error})" if record.error else ""),
                param="id",
                code="evaluation_not_finished",
            )
        traces: list[SampleTrace] | None = read_traces(run_dir) if include_traces else None
        return EvaluationResults(id=job_id, summary=read_summary(run_dir), traces=traces)
