"""Request and response bodies of ``/v1/aliases/{name}/promotions``."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serving.evaluations.protocol import EvaluationCreate, JudgeOptions, MetricName

PromotionStatus = Literal["evaluating", "promoting", "promoted", "rejected", "reverted", "failed"]


class SoakWatch(BaseModel):
    """What a soak (``step_interval_s`` > 0) watches while the candidate serves its share of the alias's traffic
    before the next step, against the version it replaces, over the same window: a regression moves the alias back
    to the baseline at once (``reverted``). Only 5xx count as errors (a client's 4xx is not the version's fault)."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate_delta: float = Field(default=0.05, ge=0.0, le=1.0)
    """Largest allowed excess of the candidate's 5xx share over the baseline's (0.05: five points)."""
    max_latency_ratio: float | None = Field(default=2.0, gt=1.0)
    """Largest allowed candidate/baseline ratio of mean latency of answered requests; none: latency not watched."""
    min_requests: int = Field(default=20, ge=1)
    """Requests of the candidate (and, for latency, answered ones of both) in the window before a verdict; a step
    whose window saw fewer goes on, with the counts recorded (quiet traffic cannot show a regression)."""


class PromotionCreate(BaseModel):
    """Evaluate ``candidate`` against the alias's current target on the same samples; move the alias only if the
    gate passes (at once, or in ``steps`` of the candidate's weight)."""

    model_config = ConfigDict(extra="forbid")

    candidate: str = Field(min_length=1, max_length=200)
    """``name@version`` (or ``name``: its latest version now)."""
    dataset: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)
    """Evaluation rows, as ``POST /v1/evaluations`` takes them."""
    dataset_name: str = Field(default="promotion", max_length=200)
    collection: str | None = Field(default=None, min_length=1, max_length=128)
    """Ground both versions' answers with this retrieval collection."""
    metrics: list[MetricName] | None = Field(default=None, min_length=1)
    """Default: the metrics the requirements name."""
    judge: JudgeOptions = Field(default_factory=JudgeOptions)
    require: list[str] = Field(min_length=1, max_length=100)
    """Gate requirements, e.g. ``["rouge_l>base", "faithfulness>=0.7"]`` (``base`` is the current target)."""
    max_failed_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    min_pairs: int = Field(default=5, ge=1)
    allow_unchecked_judge: bool = False
    steps: list[int] = Field(default_factory=lambda: [100], min_length=1, max_length=20)
    """The candidate's weight after each step, increasing, ending at 100 (e.g. ``[10, 50, 100]``)."""
    step_interval_s: float = Field(default=0.0, ge=0.0, le=86_400.0)
    """Wait between steps: a soak, watched as ``soak`` says, before the candidate's weight grows again."""
    soak: SoakWatch = Field(default_factory=SoakWatch)
    reason: str | None = Field(default=None, max_length=500)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if any(not 1 <= s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 100:
            raise ValueError("steps are increasing weights from 1 to 100 ending at 100, e.g. [10, 50, 100]")
        return steps

    @model_validator(mode="after")
    def _rows(self) -> Self:
        EvaluationCreate.samples_of(self.dataset)
        return self

    def metric_names(self) -> list[str]:
        """The metrics to compute: the given ones, else those the requirements name."""
        from eval import Requirement

        if self.metrics:
            return list(self.metrics)
        return sorted({Requirement.parse(r).metric for r in self.require})


class PromotionPublic(BaseModel):
    """A promotion and, once decided, its decision record (also kept in the alias's history)."""

    object: Literal["alias.promotion"] = "alias.promotion"
    id: str
    alias: str
    candidate: str
    baseline: str
    """The alias's target when the promotion started (its largest weight)."""
    status: PromotionStatus
    steps: list[int]
    step: int = 0
    """The candidate's weight reached so far."""
    evaluation_id: str | None = None
    dataset_sha256: str
    created_by: str | None = None
    created_at: str
    finished_at: str | None = None
    decision: dict[str, Any] | None = None
    """The gate's result: passed, each requirement's observed delta with its 95 % CI, p, n, failures, judge."""
    soaks: list[dict[str, Any]] = Field(default_factory=list)
    """One verdict per soaked step: the weight, each version's requests, 5xx and mean latency in the window,
    ``passed``/``regressed``/``insufficient_traffic`` and, when regressed, why."""
    error: str | None = None


class PromotionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PromotionPublic]
