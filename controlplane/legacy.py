"""Import a state dir written by the file-based gateway (before the control-plane database existed).

On the first start with an empty database, ``state_dir/adapters.json`` (the registry) and
``state_dir/evaluations/<id>/{job.json,request.json,run/}`` (jobs with their traces and summaries) are read in
full, then written in **one** transaction. Only after it committed are the files renamed
(``adapters.json.migrated``, ``evaluations.migrated/``), so a failure at any point leaves the files where they
were and the database empty, and the next start tries again. A database that already holds a registry or jobs is
never merged into: the files are left alone with a warning.

Version ids keep their values and the id sequence continues after the file's ``next_id``, so ids are still never
reused. Jobs that were queued or running continue as ``queued`` (a worker resumes them from their traces).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import func, select

from controlplane import changes
from controlplane.clock import read_now
from controlplane.db import Database
from controlplane.errors import ControlPlaneError, LegacyImportError
from controlplane.models import (
    Adapter,
    AdapterVersionRow,
    Alias,
    AliasTarget,
    ControlMeta,
    EvalJob,
    EvalTrace,
    IdSequence,
    RegistryEvent,
)
from controlplane.registry import VERSION_IDS, AdapterVersion

logger = logging.getLogger(__name__)

REGISTRY_FILE = "adapters.json"
JOBS_DIR = "evaluations"
MIGRATED_SUFFIX = ".migrated"
META_KEY = "legacy_import"


class _LegacyAlias(BaseModel):
    target: str
    default_collection: str | None = None
    updated_at: str


class _LegacyRegistry(BaseModel):
    format: Literal["ragswap-registry/1"] = "ragswap-registry/1"
    next_id: int = 1
    adapters: dict[str, dict[int, AdapterVersion]] = Field(default_factory=dict)
    """Its version records have the fields of today's :class:`~controlplane.registry.AdapterVersion`."""
    aliases: dict[str, _LegacyAlias] = Field(default_factory=dict)


class _LegacyProgress(BaseModel):
    done: int = 0
    total: int = 0


class _LegacyJob(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    name: str
    configs: list[str]
    metrics: list[str]
    progress: _LegacyProgress
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    resumed: int = 0
    error: str | None = None


@dataclass
class _Job:
    record: _LegacyJob
    request: dict[str, Any]
    traces: list[dict[str, Any]]
    summary: dict[str, Any] | None


@dataclass
class ImportReport:
    """What was imported from where."""

    state_dir: str
    versions: int = 0
    aliases: int = 0
    jobs: int = 0
    traces: int = 0
    skipped_jobs: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def has_legacy_state(state_dir: Path) -> bool:
    return (state_dir / REGISTRY_FILE).is_file() or any((state_dir / JOBS_DIR).glob("*/job.json"))


def _read_registry(path: Path) -> _LegacyRegistry:
    try:
        return _LegacyRegistry.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise LegacyImportError(
            f"cannot import the adapter registry {path}: {exc}; fix or move the file away to start without it",
            code="legacy_registry_unreadable",
        ) from exc


def _read_traces(path: Path) -> list[dict[str, Any]]:
    """Traces of a run directory, first occurrence of each (config, sample) kept; a torn last line is skipped."""
    if not path.is_file():
        return []
    seen: set[tuple[str, str]] = set()
    traces = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            trace = json.loads(line)
        except ValueError:
            logger.warning("skipping a torn trace line", extra={"path": str(path), "line": number})
            continue
        if not isinstance(trace, dict) or not isinstance(trace.get("config"), str):
            logger.warning("skipping a trace without config", extra={"path": str(path), "line": number})
            continue
        key = (trace["config"], str(trace.get("sample_id")))
        if key not in seen:
            seen.add(key)
            traces.append(trace)
    return traces


def _read_job(job_dir: Path) -> _Job:
    record = _LegacyJob.model_validate_json((job_dir / "job.json").read_bytes())
    request = json.loads((job_dir / "request.json").read_text(encoding="utf-8"))
    if not isinstance(request, dict):
        raise ValueError("request.json is not an object")
    run = job_dir / "run"
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else None
    return _Job(record, request, _read_traces(run / "traces.jsonl"), summary)


def import_state_dir(db: Database, state_dir: Path) -> ImportReport | None:
    """Import ``state_dir`` into an empty database; ``None`` when there is nothing (or nothing allowed) to do.

    Raises:
        LegacyImportError: the registry file cannot be read (nothing was changed).
    """
    registry_path = state_dir / REGISTRY_FILE
    jobs_root = state_dir / JOBS_DIR
    if not has_legacy_state(state_dir):
        return None
    registry = _read_registry(registry_path) if registry_path.is_file() else _LegacyRegistry()
    report = ImportReport(state_dir=str(state_dir))
    jobs: list[_Job] = []
    for job_dir in sorted(p.parent for p in jobs_root.glob("*/job.json")):
        try:
            jobs.append(_read_job(job_dir))
        except (OSError, ValueError, ValidationError) as exc:
            logger.warning("not importing an unreadable job", extra={"path": str(job_dir), "error": str(exc)})
            report.skipped_jobs.append(job_dir.name)

    try:
        with db.write() as session:
            change = changes.bump(session)
            if session.get(ControlMeta, META_KEY) is not None:
                return None  # imported already (by another process starting at the same time)
            occupied = sum(
                session.scalar(select(func.count()).select_from(model)) or 0
                for model in (Adapter, Alias, EvalJob)
            )
            if occupied:
                logger.warning(
                    "the control-plane database already holds a registry or jobs: not importing the state dir",
                    extra={"state_dir": str(state_dir)},
                )
                return None
            now = read_now(session)
            _insert_registry(session, registry, report)
            _insert_jobs(session, jobs, report)
            sequence = session.get(IdSequence, VERSION_IDS)
            top = max(
                [registry.next_id - 1, *(v.id for vs in registry.adapters.values() for v in vs.values())]
            )
            if sequence is None:
                session.add(IdSequence(name=VERSION_IDS, value=top))
            else:
                sequence.value = max(sequence.value, top)
            summary = {k: v for k, v in vars(report).items() if k != "renamed"}
            session.add(ControlMeta(key=META_KEY, value={**summary, "at": now}))
            session.add(
                RegistryEvent(
                    at=now,
                    change=change,
                    actor="import",
                    kind="registry.imported",
                    subject="state_dir",
                    data=summary,
                )
            )
    except ControlPlaneError:
        raise
    except Exception as exc:
        raise LegacyImportError(
            f"importing the state dir {state_dir} failed and was rolled back (files untouched): "
            f"{type(exc).__name__}: {exc}",
            code="legacy_import_failed",
        ) from exc
    for path in (registry_path, jobs_root):
        if path.exists():
            target = path.with_name(path.name + MIGRATED_SUFFIX)
            try:
                path.rename(target)
                report.renamed.append(str(target))
            except OSError as exc:  # imported already; the meta row keeps it from being imported twice
                logger.warning(
                    "could not rename an imported path", extra={"path": str(path), "error": str(exc)}
                )
    logger.info("imported a file-based state dir", extra=vars(report))
    return report


def _insert_registry(session: Any, registry: _LegacyRegistry, report: ImportReport) -> None:
    version_ids: dict[str, int] = {}
    for name, versions in sorted(registry.adapters.items()):
        if not versions:
            continue
        adapter = Adapter(name=name, created_at=min(_epoch(v.created_at) for v in versions.values()))
        session.add(adapter)
        session.flush()
        for number, v in sorted(versions.items()):
            session.add(
                AdapterVersionRow(
                    id=v.id,
                    adapter_id=adapter.id,
                    version=number,
                    path=v.path,
                    rank=v.rank,
                    target_modules=v.target_modules,
                    base_check=v.base_check,
                    default_collection=v.default_collection,
                    details={},
                    created_at=_epoch(v.created_at),
                    created_by="import",
                )
            )
            version_ids[f"{name}@{number}"] = v.id
            report.versions += 1
    session.flush()
    for alias_name, alias in sorted(registry.aliases.items()):
        version_id = version_ids.get(alias.target)
        if version_id is None:
            logger.warning(
                "not importing an alias to nothing", extra={"alias": alias_name, "target": alias.target}
            )
            continue
        row = Alias(
            name=alias_name,
            default_collection=alias.default_collection,
            updated_at=_epoch(alias.updated_at),
            updated_by="import",
        )
        row.targets = [AliasTarget(version_id=version_id, weight=100)]
        session.add(row)
        report.aliases += 1
    session.flush()


def _insert_jobs(session: Any, jobs: list[_Job], report: ImportReport) -> None:
    for job in jobs:
        r = job.record
        final = r.status in ("succeeded", "failed", "cancelled")
        session.add(
            EvalJob(
                id=r.id,
                status=r.status if final else "queued",
                name=r.name,
                request=job.request,
                configs=r.configs,
                metrics=r.metrics,
                done=len(job.traces),
                total=r.progress.total,
                created_at=float(r.created_at),
                created_by="import",
                started_at=float(r.started_at) if r.started_at else None,
                finished_at=float(r.finished_at) if r.finished_at else None,
                attempts=r.resumed + 1 if r.started_at else 0,
                resumed=r.resumed,
                error=r.error,
                worker=None,
                lease_expires_at=None,
                heartbeat_at=None,
                cancel_requested=r.status == "cancelled",
                summary=job.summary if r.status == "succeeded" else None,
            )
        )
        session.flush()
        for trace in job.traces:
            session.add(
                EvalTrace(
                    job_id=r.id,
                    config=trace["config"],
                    sample_id=str(trace.get("sample_id")),
                    trace=trace,
                    worker="import",
                    attempt=r.resumed + 1 if r.started_at else 0,
                    created_at=float(r.finished_at or r.started_at or r.created_at),
                )
            )
            report.traces += 1
        report.jobs += 1
    session.flush()
