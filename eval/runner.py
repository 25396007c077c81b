"""Offline runs: every sample through every config (retrieve → answer → score), written to a run directory.

Layout of a run directory::

    run.json       what was run (dataset, configs, metrics, judge) — enough to resume it
    traces.jsonl   one SampleTrace per line, appended as samples finish
    summary.json   RunSummary: per config and metric mean, 95 % bootstrap CI, ok/failed/skipped counts
    report.html    self-contained HTML report (plots embedded)

Traces are appended as they finish and a rerun skips (config, sample) pairs already present, so an interrupted run
(Ctrl-C, a gateway restart during an API job) resumes where it stopped. Where traces go is a :class:`TraceSink`:
``traces.jsonl`` by default (:class:`FileTraceSink`); evaluation workers pass one that writes to the control-plane
database instead (then no run directory is written).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from eval.paired import annotate_summary
from eval.platform import PlatformClient, PlatformError
from eval.records import (
    EvalSample,
    JudgeCheck,
    JudgeInfo,
    RetrievedChunk,
    RunConfig,
    RunSummary,
    SampleTrace,
)
from eval.scoring import Scorer
from eval.stats import summarise_traces
from ragswap import write_atomic

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
Pace = Callable[[], Awaitable[None]]
"""Awaited before each sample's work and before the summary: a caller that must not compete with other work for
the CPU (an evaluation worker beside a serving gateway) waits there until it may go on."""


class RunSpec(BaseModel):
    """``run.json``: the inputs of a run."""

    run_id: str
    dataset: str
    samples: list[EvalSample]
    configs: list[RunConfig] = Field(min_length=1)
    metrics: list[str]
    judge: JudgeInfo
    k: int = 5
    bootstrap_samples: int = 1000


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")


def read_traces(run_dir: Path) -> list[SampleTrace]:
    """The traces written so far (a torn last line from a crash is ignored)."""
    path = run_dir / "traces.jsonl"
    if not path.is_file():
        return []
    traces = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            traces.append(SampleTrace.model_validate_json(line))
        except ValueError:
            logger.warning("skipping a torn trace line", extra={"run_dir": str(run_dir)})
    return traces


def read_summary(run_dir: Path) -> RunSummary:
    return RunSummary.model_validate_json((run_dir / "summary.json").read_text(encoding="utf-8"))


async def _trace_for(sample: EvalSample, config: RunConfig, platform: PlatformClient | None) -> SampleTrace:
    trace = SampleTrace(
        sample_id=sample.id,
        config=config.name,
        question=sample.question,
        reference=sample.reference,
        reference_context_ids=sample.reference_context_ids,
    )
    given = sample.given_response(config.model)
    if platform is None or given is not None:
        # The dataset already holds the system's outputs (ragas EvaluationDataset, a shadow capture): score them
        # as they are.
        ids = sample.retrieved_context_ids or []
        texts = sample.retrieved_contexts or []
        count = max(len(ids), len(texts))
        trace.retrieved = [
            RetrievedChunk(id=ids[i] if i < len(ids) else str(i), text=texts[i] if i < len(texts) else "")
            for i in range(count)
        ]
        trace.answer = given
        trace.latency_s = sample.given_latency(config.model)
        if trace.answer is None:
            trace.error = (
                f"no response of {config.model} in the dataset"
                if sample.responses is not None
                else "no response in the dataset and no server to generate one"
            )
        return trace
    try:
        trace.retrieved = await platform.retrieve(sample.question, config)
        trace.answer, trace.citations, trace.latency_s = await platform.answer(sample.question, config)
    except PlatformError as exc:
        trace.error = str(exc)
    return trace


class TraceSink(Protocol):
    """Where a run's traces are stored. Methods may block (the runner calls them from a thread); ``append`` may
    raise to stop the run (e.g. a worker that lost its job's lease)."""

    def done(self) -> set[tuple[str, str]]:
        """(config, sample id) pairs traced by an earlier, interrupted attempt: a resumed run skips them."""
        ...

    def append(self, trace: SampleTrace) -> None:
        """Store one finished, scored sample."""
        ...

    def all(self) -> list[SampleTrace]:
        """Every stored trace (the summary is computed from them)."""
        ...


class FileTraceSink:
    """``traces.jsonl`` in a run directory, one trace per line."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "traces.jsonl"

    def done(self) -> set[tuple[str, str]]:
        traces = read_traces(self.run_dir)
        if traces:
            # Rewrite without a torn last line (a crash mid-write), so that new traces append cleanly.
            write_atomic(self.path, "".join(t.model_dump_json() + "\n" for t in traces))
        return {(t.config, t.sample_id) for t in traces}

    def append(self, trace: SampleTrace) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(trace.model_dump_json() + "\n")

    def all(self) -> list[SampleTrace]:
        return read_traces(self.run_dir)


def summarise_run(
    spec: RunSpec,
    traces: list[SampleTrace],
    seconds: float,
    judge_calls: int,
    failures: int,
    *,
    judge: JudgeInfo | None = None,
    judge_check: JudgeCheck | None = None,
    samples_per_minute: float | None = None,
) -> RunSummary:
    """The run's summary from its traces (with the judge check and the paired comparisons)."""
    summary = RunSummary(
        run_id=spec.run_id,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        dataset=spec.dataset,
        n_samples=len(spec.samples),
        judge=judge or spec.judge,
        configs=spec.configs,
        metrics=spec.metrics,
        results=summarise_traces(traces, spec.metrics, spec.bootstrap_samples),
        judge_calls=judge_calls,
        judge_failures=failures,
        seconds=round(seconds, 2),
        samples_per_minute=samples_per_minute,
    )
    annotate_summary(summary, traces, judge_check, spec.bootstrap_samples)
    return summary


def write_summary(run_dir: Path, summary: RunSummary) -> RunSummary:
    """Write ``summary.json`` (atomically: a reader or a crash sees the previous summary or this one)."""
    write_atomic(run_dir / "summary.json", summary.model_dump_json(indent=2))
    return summary


def _start_run_dir(run_dir: Path, spec: RunSpec) -> None:
    """Write ``run.json``: what is run, enough to resume it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / "run.json", spec.model_dump_json(indent=2))


async def execute_run(
    spec: RunSpec,
    run_dir: Path | None,
    scorer: Scorer,
    platform: PlatformClient | None,
    *,
    concurrency: int = 4,
    progress: ProgressCallback | None = None,
    report: bool = True,
    sink: TraceSink | None = None,
    pace: Pace | None = None,
) -> RunSummary:
    """Run (or resume) ``spec``; returns the summary.

    Traces go to ``sink`` (default: ``run_dir/traces.jsonl``). With a ``run_dir`` the summary and the report are
    written there too; with only a sink nothing touches the file system.
    """
    if sink is None:
        if run_dir is None:
            raise ValueError("execute_run: give a run directory or a trace sink")
        sink = FileTraceSink(run_dir)
    if run_dir is not None:
        await asyncio.to_thread(_start_run_dir, run_dir, spec)
    done = await asyncio.to_thread(sink.done)
    todo = [(c, s) for c in spec.configs for s in spec.samples if (c.name, s.id) not in done]
    total = len(spec.configs) * len(spec.samples)
    finished = total - len(todo)
    if progress:
        progress(finished, total)
    # The judge's window and tokenizer, and the judge check (cached), before any sample.
    await scorer.prepare()
    start = time.perf_counter()
    semaphore = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()

    async def one(config: RunConfig, sample: EvalSample) -> None:
        nonlocal finished
        async with semaphore:
            if pace is not None:
                await pace()
            trace = await _trace_for(sample, config, platform)
            trace.scores = await scorer.score(sample, trace)
        async with lock:
            await asyncio.to_thread(sink.append, trace)
            finished += 1
            if progress:
                progress(finished, total)

    await asyncio.gather(*(one(c, s) for c, s in todo))
    seconds = time.perf_counter() - start
    stats = scorer.judge_stats()
    if pace is not None:
        await pace()
    traces = await asyncio.to_thread(sink.all)
    # Off the event loop: the bootstrap statistics of every comparison take a while.
    summary = await asyncio.to_thread(
        lambda: summarise_run(
            spec,
            traces,
            seconds,
            stats.get("calls", 0),
            stats.get("failures", 0),
            judge=scorer.judge_info(spec.judge),
            judge_check=scorer.judge_check,
            samples_per_minute=round(len(todo) / seconds * 60, 2) if todo and seconds > 0 else None,
        )
    )
    if run_dir is not None:
        await asyncio.to_thread(write_summary, run_dir, summary)
        if report:
            from eval.report import write_report

            await asyncio.to_thread(write_report, run_dir)
    logger.info("evaluation run finished", extra={"run_dir": str(run_dir), "samples": total})
    return summary
