"""Typed records of an evaluation: dataset samples, metric scores with their judge calls, traces and summaries.

Kept apart from the logic so that the CLI, the run directory and the ``/v1/evaluations`` API share one shape.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EvalSample(BaseModel):
    """One dataset row. ``response``/``retrieved_contexts`` are set when the dataset already holds answers."""

    model_config = ConfigDict(extra="forbid")

    id: str
    question: str = Field(min_length=1)
    reference: str | None = None
    reference_contexts: list[str] | None = None
    reference_context_ids: list[str] | None = None
    response: str | None = None
    retrieved_contexts: list[str] | None = None
    retrieved_context_ids: list[str] | None = None


class JudgeCall(BaseModel):
    """One judge request as the metric saw it: the raw text the model returned and whether it parsed."""

    schema_name: str
    prompt_sha: str
    attempts: int
    cached: bool = False
    raw: str | None = None
    """The last raw output (the one that parsed, or the last failed one)."""
    ok: bool
    error: str | None = None


ScoreStatus = Literal["ok", "failed", "skipped"]


class MetricScore(BaseModel):
    """A metric's verdict on one sample. ``value`` is set only when ``status == "ok"``: a failure is never a 0."""

    name: str
    status: ScoreStatus
    value: float | None = None
    reason: str | None = None
    judge_calls: list[JudgeCall] = Field(default_factory=list)


class RetrievedChunk(BaseModel):
    """A retrieved passage in rank order; ``doc_id`` groups chunks of one source document."""

    id: str
    text: str
    doc_id: str | None = None
    score: float | None = None


class RunConfig(BaseModel):
    """One system under test: a model or adapter plus retrieval options."""

    model_config = ConfigDict(extra="forbid")

    name: str
    model: str
    collection: str | None = None
    retrieval_mode: Literal["hybrid", "dense", "sparse"] | None = None
    top_k: int | None = Field(default=None, ge=1, le=100)
    rerank: bool | None = None


class SampleTrace(BaseModel):
    """Everything about one sample under one config: inputs, retrieval, answer, citations and every score."""

    sample_id: str
    config: str
    question: str
    reference: str | None = None
    reference_context_ids: list[str] | None = None
    retrieved: list[RetrievedChunk] = Field(default_factory=list)
    answer: str | None = None
    citations: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None
    """Why retrieval or generation failed for this sample (its metrics are then failed too)."""
    latency_s: float | None = None
    scores: dict[str, MetricScore] = Field(default_factory=dict)


class MetricSummary(BaseModel):
    """Aggregate of one metric under one config; failed and skipped samples are counted, never averaged."""

    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n_ok: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    failure_reasons: dict[str, int] = Field(default_factory=dict)


class JudgeInfo(BaseModel):
    url: str | None = None
    model: str | None = None
    structured_output: bool = True


class RunSummary(BaseModel):
    """``summary.json`` of a run directory."""

    run_id: str
    created_at: str
    dataset: str
    n_samples: int
    judge: JudgeInfo
    configs: list[RunConfig]
    metrics: list[str]
    results: dict[str, dict[str, MetricSummary]]
    """config name → metric name → summary."""
    judge_calls: int = 0
    judge_failures: int = 0
    seconds: float = 0.0
