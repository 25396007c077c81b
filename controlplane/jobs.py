"""The evaluation job queue: enqueue, claim with a lease, heartbeat, trace, finish, cancel.

Claiming is ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL (workers never block each other and never get the
same job) and a ``BEGIN IMMEDIATE`` transaction on SQLite (one claimer at a time). A claimable job is ``queued``,
or ``running`` with an expired lease: its worker died, so the next claim re-queues it implicitly and it resumes
from the traces already stored.

Every trace write is fenced: it commits only while the writing worker still holds the lease of a ``running``
job, else :class:`~controlplane.errors.LeaseLostError`. With the unique key on (job, config, sample) no sample is
recorded twice, whatever the workers do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.clock import read_now
from controlplane.db import Database
from controlplane.errors import LeaseLostError, RecordConflictError, RecordNotFoundError
from controlplane.models import EvalJob, EvalTrace

FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
"""Statuses a job never leaves."""


@dataclass(frozen=True)
class JobRecord:
    """A job as the API reports it (the request and traces are fetched separately)."""

    id: str
    status: str
    name: str
    configs: list[str]
    metrics: list[str]
    done: int
    total: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    resumed: int
    error: str | None
    worker: str | None
    lease_expires_at: float | None
    heartbeat_at: float | None
    cancel_requested: bool
    created_by: str | None
    has_summary: bool


@dataclass(frozen=True)
class ClaimedJob:
    """What a worker needs to run a job it just claimed."""

    record: JobRecord
    request: dict[str, Any]
    attempt: int


def _record(row: EvalJob) -> JobRecord:
    return JobRecord(
        id=row.id,
        status=row.status,
        name=row.name,
        configs=list(row.configs),
        metrics=list(row.metrics),
        done=row.done,
        total=row.total,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        attempts=row.attempts,
        resumed=row.resumed,
        error=row.error,
        worker=row.worker,
        lease_expires_at=row.lease_expires_at,
        heartbeat_at=row.heartbeat_at,
        cancel_requested=row.cancel_requested,
        created_by=row.created_by,
        has_summary=row.summary is not None,
    )


def _not_found(job_id: str) -> RecordNotFoundError:
    return RecordNotFoundError(f"evaluation {job_id!r} not found", param="id", code="evaluation_not_found")


class JobStore:
    """Evaluation jobs and their traces on ``db``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- the gateway's side: enqueue, report, cancel ---------------------------------------------------------

    def enqueue(
        self,
        job_id: str,
        *,
        name: str,
        request: dict[str, Any],
        configs: Sequence[str],
        metrics: Sequence[str],
        total: int,
        created_by: str | None = None,
    ) -> JobRecord:
        with self.db.write() as session:
            row = EvalJob(
                id=job_id,
                status="queued",
                name=name,
                request=request,
                configs=list(configs),
                metrics=list(metrics),
                done=0,
                total=total,
                created_at=read_now(session),
                created_by=created_by,
                attempts=0,
                resumed=0,
                cancel_requested=False,
            )
            session.add(row)
            session.flush()
            return _record(row)

    def get(self, job_id: str) -> JobRecord:
        with self.db.read() as session:
            row = session.get(EvalJob, job_id)
            if row is None:
                raise _not_found(job_id)
            return _record(row)

    def recent(self, limit: int = 200, status: str | None = None) -> list[JobRecord]:
        """Newest first."""
        with self.db.read() as session:
            query = select(EvalJob).order_by(EvalJob.created_at.desc(), EvalJob.id).limit(limit)
            if status is not None:
                query = query.where(EvalJob.status == status)
            return [_record(r) for r in session.scalars(query).all()]

    def request(self, job_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            row = session.get(EvalJob, job_id)
            if row is None:
                raise _not_found(job_id)
            return dict(row.request)

    def summary(self, job_id: str) -> dict[str, Any] | None:
        with self.db.read() as session:
            row = session.get(EvalJob, job_id)
            if row is None:
                raise _not_found(job_id)
            return dict(row.summary) if row.summary is not None else None

    def cancel(self, job_id: str) -> JobRecord:
        """Mark a queued or running job cancelled (final at once; its worker stops at its next write).

        Raises:
            RecordNotFoundError: no such job.
            RecordConflictError: the job already finished.
        """
        with self.db.write() as session:
            row = session.get(EvalJob, job_id, with_for_update=True)
            if row is None:
                raise _not_found(job_id)
            if row.status in FINAL_STATUSES:
                raise RecordConflictError(
                    f"evaluation {job_id!r} already {row.status}", param="id", code="evaluation_finished"
                )
            row.status, row.cancel_requested = "cancelled", True
            row.finished_at, row.lease_expires_at = read_now(session), None
            session.flush()
            return _record(row)

    # ---- the worker's side: claim, heartbeat, trace, finish ----------------------------------------------------

    def claim(self, worker: str, lease_s: float) -> ClaimedJob | None:
        """The oldest queued job, or a running one whose lease expired; ``None`` when there is nothing to do."""
        with self.db.write() as session:
            now = read_now(session)
            row = session.scalars(
                select(EvalJob)
                .where(
                    or_(
                        EvalJob.status == "queued",
                        and_(EvalJob.status == "running", EvalJob.lease_expires_at < now),
                    )
                )
                .order_by(EvalJob.created_at, EvalJob.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            if row.attempts > 0:
                row.resumed += 1
            row.attempts += 1
            row.status, row.worker, row.error = "running", worker, None
            row.lease_expires_at, row.heartbeat_at = now + lease_s, now
            row.started_at = row.started_at or now
            session.flush()
            return ClaimedJob(record=_record(row), request=dict(row.request), attempt=row.attempts)

    def _fence(self, session: Session, job_id: str, worker: str, **values: Any) -> None:
        """Update the job only while ``worker`` holds its lease; else raise :class:`LeaseLostError` (why, in words)."""
        result = session.execute(
            update(EvalJob)
            .where(EvalJob.id == job_id, EvalJob.worker == worker, EvalJob.status == "running")
            .values(**values)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return
        row = session.get(EvalJob, job_id)
        if row is None:
            raise LeaseLostError(f"evaluation {job_id!r} was deleted", code="evaluation_deleted")
        if row.status == "cancelled":
            raise LeaseLostError(f"evaluation {job_id!r} was cancelled", code="evaluation_cancelled")
        raise LeaseLostError(
            f"evaluation {job_id!r} is now {row.status} on {row.worker or 'no worker'}", code="lease_lost"
        )

    def heartbeat(self, job_id: str, worker: str, lease_s: float) -> None:
        """Extend the lease by ``lease_s`` from now. Raises :class:`LeaseLostError` when it is not ours any more."""
        with self.db.write() as session:
            now = read_now(session)
            self._fence(session, job_id, worker, lease_expires_at=now + lease_s, heartbeat_at=now)

    def release(self, job_id: str, worker: str) -> None:
        """Give a running job back to the queue (the worker is stopping); a later claim resumes it."""
        with self.db.write() as session:
            session.execute(
                update(EvalJob)
                .where(EvalJob.id == job_id, EvalJob.worker == worker, EvalJob.status == "running")
                .values(status="queued", lease_expires_at=None)
            )

    def finish(
        self,
        job_id: str,
        worker: str,
        status: str,
        *,
        summary: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """``succeeded`` (with its summary) or ``failed`` (with the error). Raises :class:`LeaseLostError`."""
        if status not in ("succeeded", "failed"):
            raise ValueError(f"finish: status must be succeeded or failed, not {status!r}")
        with self.db.write() as session:
            now = read_now(session)
            self._fence(
                session,
                job_id,
                worker,
                status=status,
                summary=summary,
                error=error,
                finished_at=now,
                lease_expires_at=None,
            )

    # ---- traces ----------------------------------------------------------------------------------------------

    def traced(self, job_id: str) -> set[tuple[str, str]]:
        """(config, sample id) pairs already traced."""
        with self.db.read() as session:
            rows = session.execute(
                select(EvalTrace.config, EvalTrace.sample_id).where(EvalTrace.job_id == job_id)
            ).all()
            return {(c, s) for c, s in rows}

    def append_trace(
        self, job_id: str, worker: str, attempt: int, config: str, sample_id: str, trace: dict[str, Any]
    ) -> None:
        """Store one finished sample and count it, atomically and only while ``worker`` holds the lease.

        Raises:
            LeaseLostError: the lease is gone, or another worker already stored this sample.
        """
        try:
            with self.db.write() as session:
                now = read_now(session)
                self._fence(session, job_id, worker, done=EvalJob.done + 1, heartbeat_at=now)
                session.add(
                    EvalTrace(
                        job_id=job_id,
                        config=config,
                        sample_id=sample_id,
                        trace=trace,
                        worker=worker,
                        attempt=attempt,
                        created_at=now,
                    )
                )
        except IntegrityError as exc:
            raise LeaseLostError(
                f"evaluation {job_id!r}: {config}/{sample_id} was already traced by another worker",
                code="already_traced",
            ) from exc

    def traces(self, job_id: str) -> list[dict[str, Any]]:
        """Every stored trace, in the order they were written."""
        with self.db.read() as session:
            return [
                dict(t)
                for t in session.scalars(
                    select(EvalTrace.trace).where(EvalTrace.job_id == job_id).order_by(EvalTrace.id)
                ).all()
            ]

    def trace_rows(self, job_id: str) -> list[tuple[str, str, str | None, int]]:
        """(config, sample id, worker, attempt) of each stored trace: who scored what."""
        with self.db.read() as session:
            return [
                (c, s, w, a)
                for c, s, w, a in session.execute(
                    select(EvalTrace.config, EvalTrace.sample_id, EvalTrace.worker, EvalTrace.attempt)
                    .where(EvalTrace.job_id == job_id)
                    .order_by(EvalTrace.id)
                ).all()
            ]

    def count(self, status: str | None = None) -> int:
        with self.db.read() as session:
            query = select(func.count()).select_from(EvalJob)
            if status is not None:
                query = query.where(EvalJob.status == status)
            return int(session.scalar(query) or 0)

    def delete(self, job_id: str) -> None:
        with self.db.write() as session:
            session.execute(delete(EvalJob).where(EvalJob.id == job_id))
