"""Request and response bodies of ``/v1/evaluations``."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from eval import ALL_METRICS, EvalRequest, EvalSample, RetrievalMode, RunSummary, SampleTrace


def _known_metric(name: str) -> str:
    if name not in ALL_METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(ALL_METRICS)}")
    return name


MetricName = Annotated[
    str, AfterValidator(_known_metric), Field(json_schema_extra={"enum": list(ALL_METRICS)})
]

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JudgeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None, description="OpenAI-compatible judge endpoint; default: this gateway."
    )
    model: str | None = Field(default=None, description="Judge model; default: the base model.")
    structured_output: bool | None = None


class EvaluationCreate(BaseModel):
    """``POST /v1/evaluations``: dataset rows inline (ragswap or ragas EvaluationDataset fields)."""

    model_config = ConfigDict(extra="forbid")

    dataset: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)
    name: str = Field(default="inline", max_length=200)
    adapters: list[str] = Field(default_factory=list, max_length=32)
    collection: str | None = None
    retrieval_modes: list[RetrievalMode] = Field(default_factory=list)
    top_k: int | None = Field(default=None, ge=1, le=100)
    rerank: bool | None = None
    metrics: list[MetricName] | None = Field(default=None, min_length=1)
    """Default: ``eval.metrics``."""
    judge: JudgeOptions = Field(default_factory=JudgeOptions)
    score_only: bool = False
    """Score the ``response`` each row carries instead of generating one; ``adapters`` then only name the configs
    (they need not be registered)."""

    @field_validator("dataset")
    @classmethod
    def _rows(cls, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cls.samples_of(rows)
        return rows

    @field_validator("adapters")
    @classmethod
    def _distinct(cls, adapters: list[str]) -> list[str]:
        if len(set(adapters)) != len(adapters):
            raise ValueError("an adapter is listed twice")
        return adapters

    @model_validator(mode="after")
    def _answers_to_score(self) -> Self:
        if self.score_only:
            missing = [row.get("id", i) for i, row in enumerate(self.dataset) if row.get("response") is None]
            if missing:
                raise ValueError(f"score_only: row {missing[0]!r} has no response to score")
        return self

    @staticmethod
    def samples_of(rows: list[dict[str, Any]]) -> list[EvalSample]:
        """Validate rows with the dataset loader; errors name the row ("row 3: ...")."""
        import json

        from eval import DatasetError, parse_rows

        try:
            return parse_rows((json.dumps(row) for row in rows), source="row")
        except DatasetError as exc:
            raise ValueError(str(exc)) from exc

    def to_eval_request(self) -> EvalRequest:
        return EvalRequest(
            dataset_name=self.name,
            samples=self.samples_of(self.dataset),
            adapters=self.adapters,
            collection=self.collection,
            retrieval_modes=self.retrieval_modes,
            top_k=self.top_k,
            rerank=self.rerank,
            metrics=self.metrics,
            judge_url=self.judge.url,
            judge_model=self.judge.model,
            structured_output=self.judge.structured_output,
            score_only=self.score_only,
        )


class Progress(BaseModel):
    done: int = 0
    total: int = 0


class EvaluationPublic(BaseModel):
    """A job as clients see it."""

    id: str
    object: Literal["evaluation"] = "evaluation"
    status: JobStatus
    name: str
    configs: list[str]
    metrics: list[str]
    progress: Progress
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    resumed: int = 0
    """How often the job was picked up again after an interruption (its worker stopped or died)."""
    attempts: int = 0
    """How often a worker claimed it."""
    worker: str | None = None
    """The worker running it (``worker:host:pid:id``), or the last one that did."""
    error: str | None = None


class EvaluationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EvaluationPublic]


class EvaluationResults(BaseModel):
    """``GET /v1/evaluations/{id}/results``: the run summary and (optionally) every per-sample trace."""

    id: str
    object: Literal["evaluation.results"] = "evaluation.results"
    summary: RunSummary
    traces: list[SampleTrace] | None = None
