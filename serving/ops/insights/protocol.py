"""Bodies of the read-only views: who am I, metrics summary, adapter sources and manifests, run comparisons."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class WhoAmI(BaseModel):
    """``GET /v1/whoami``: the scope of the key the request carried (never the key)."""

    object: Literal["principal"] = "principal"
    role: Literal["admin", "user"]
    admin: bool
    """May change adapters, aliases and collections."""
    key_hint: str
    """The key's last four characters (``…abcd``), or ``anonymous``."""
    auth_required: bool
    """False when the gateway has no key configured (loopback-only development mode: everyone is admin)."""


class Quantiles(BaseModel):
    p50: float | None = None
    p95: float | None = None


class ModelStats(BaseModel):
    """One model's traffic over the window (``model`` is the base model, an adapter name, or ``all``)."""

    model: str
    requests: int
    requests_per_s: float
    errors: int
    error_rate: float | None
    """Failed / all requests in the window; None without requests."""
    latency_s: Quantiles
    """End-to-end latency, estimated from the histogram buckets."""
    ttft_s: Quantiles
    """Time to first token of streaming requests."""
    completion_tokens_per_s: float
    prompt_tokens: int
    completion_tokens: int
    total_requests: int
    """Since the gateway started."""
    total_errors: int


class RatePoint(BaseModel):
    t: float
    """Unix time at the end of the interval."""
    requests_per_s: float
    errors_per_s: float


class MetricsSummary(BaseModel):
    """``GET /v1/metrics/summary``: the gateway's own Prometheus metrics over a recent window."""

    object: Literal["metrics.summary"] = "metrics.summary"
    window_s: float
    """Seconds actually covered (shorter than asked right after a start)."""
    requested_window_s: float
    interval_s: float
    """Sampling interval of the history (and of ``series``)."""
    generated_at: float
    overall: ModelStats
    models: list[ModelStats]
    series: list[RatePoint]
    """Request and error rate of all models per sampling interval, oldest first."""


class AdapterSource(BaseModel):
    """An adapter directory found under an adapter root."""

    path: str
    """Relative to its root (what ``POST /v1/adapters`` accepts for the first root)."""
    absolute_path: str
    root: str
    name: str | None = None
    """The manifest's name, if it has a ``ragswap.json``."""
    base_model: str | None = None
    rank: int | None = None
    manifest_error: str | None = None
    registered_as: list[str] = Field(default_factory=list)
    """``name@version`` of registered versions loaded from this directory."""


class AdapterSources(BaseModel):
    """``GET /v1/adapter-roots``: the configured roots and the adapter directories under them."""

    object: Literal["list"] = "list"
    roots: list[str]
    data: list[AdapterSource]
    truncated: bool = False
    """More directories exist than were scanned (see ``serving.ops.insights.sources.MAX_SOURCES``)."""


class AdapterManifestView(BaseModel):
    """``GET /v1/adapters/{ref}/manifest``: the ``ragswap.json`` of one version (what it was trained on)."""

    object: Literal["adapter.manifest"] = "adapter.manifest"
    model: str
    """``name@version``."""
    path: str
    manifest: dict[str, Any] | None = None
    error: str | None = None
    """Why there is no manifest (none written, unreadable)."""


class MetricDelta(BaseModel):
    metric: str
    mean_a: float | None
    mean_b: float | None
    delta: float | None
    """``mean_b - mean_a`` over each run's own scored samples."""
    paired_delta: float | None
    """Mean of per-sample ``b - a`` over the samples both runs scored."""
    n_pairs: int
    n_a: int
    n_b: int
    ci_low: float | None = None
    """Paired 95 % CI of the difference: filled in once the evaluation package computes paired statistics."""
    ci_high: float | None = None
    p_value: float | None = None
    verdict: str | None = None


class SamplePair(BaseModel):
    """One sample in both runs: what each answered and how each metric scored it (None: not scored)."""

    sample_id: str
    question: str
    answer_a: str | None = None
    answer_b: str | None = None
    scores_a: dict[str, float | None] = Field(default_factory=dict)
    scores_b: dict[str, float | None] = Field(default_factory=dict)


class ConfigComparison(BaseModel):
    config_a: str
    config_b: str
    metrics: list[MetricDelta]
    samples: list[SamplePair] = Field(default_factory=list)
    """Samples present in both runs, by id (positional ids in dataset order), at most ``MAX_SAMPLES``."""
    samples_truncated: bool = False


class RunComparison(BaseModel):
    """``GET /v1/evaluations/{a}/compare/{b}``: B − A per paired config and metric."""

    object: Literal["evaluation.comparison"] = "evaluation.comparison"
    a: str
    b: str
    dataset_a: str
    dataset_b: str
    pairs: list[ConfigComparison]
    note: str | None = None
