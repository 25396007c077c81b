"""Evaluation settings (``RAGSWAP_EVAL__*``). Owned by the eval package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ragswap import ragswap_home

ALL_METRICS: tuple[str, ...] = (
    "faithfulness",
    "answer_relevancy",
    "context_precision",
    "context_recall",
    "id_context_precision",
    "id_context_recall",
    "ndcg",
    "recall",
    "mrr",
    "rouge_l",
    "semantic_similarity",
)
"""Every metric ragswap can compute; the first four are LLM-judged (RAGAS)."""

JUDGED_METRICS: tuple[str, ...] = ALL_METRICS[:4]


class EvalSettings(BaseModel):
    """Judge endpoint, metrics and run output defaults."""

    model_config = ConfigDict(extra="forbid")

    judge_url: str | None = None
    """OpenAI-compatible base URL of the judge (``.../v1``); empty = ragswap's own gateway (``server.host:port``)."""
    judge_model: str | None = None
    """Judge model name; empty = the configured base model (``models.base_model``)."""
    judge_api_key: SecretStr | None = None
    """Bearer token for the judge endpoint; empty = the first ``server.api_keys`` entry, or ``"x"``."""
    structured_output: bool = True
    """Send ``response_format: json_schema`` (vLLM enforces it); off = ask for JSON in the prompt only."""
    judge_max_retries: int = Field(default=2, ge=0, le=10)
    """Extra attempts when the judge's output does not parse or the call fails."""
    judge_max_tokens: int = Field(default=512, ge=16)
    judge_temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    judge_max_items: int = Field(default=6, ge=1, le=100)
    """``maxItems`` added to every list in the judge's JSON schema: a small judge otherwise repeats itself to
    ``max_tokens`` and the output is cut off."""
    judge_max_chars: int = Field(default=200, ge=16)
    """``maxLength`` added to every free-text field (reasons, statements) in the judge's JSON schema."""
    judge_few_shot: list[str] = Field(default_factory=lambda: ["answer_relevancy", "context_recall"])
    """Judged metrics that keep ragas's few-shot examples in their prompts. With SmolLM2 as judge the examples
    help these two and hurt faithfulness and context precision (the judge copies the examples' statements)."""
    judge_context_tokens: int | None = Field(default=None, ge=256)
    """The judge's context window in tokens. Empty = what the judge endpoint's ``/v1/models`` reports as
    ``max_model_len`` (vLLM and ragswap's gateway do), else 2048. When both are known the smaller is used. Every
    judge prompt is fitted to it less ``judge_max_tokens``: few-shot examples are dropped first, then passages are
    split across calls; a prompt that still does not fit fails with the reason, it is never sent."""
    judge_chars_per_token: float = Field(default=2.5, ge=1.0, le=10.0)
    """Characters per token assumed when the judge's tokenizer is not local (an external judge model); low =
    conservative. With a judge from the model store, prompts are counted with its own tokenizer instead."""
    judge_check: bool = True
    """Check the judge on the labelled calibration set before a run's judged metrics (once per judge model,
    endpoint and prompt version: cached under ``cache_dir/judge-checks`` even when ``cache`` is off). Metrics whose
    judge is not above chance are flagged "judge unreliable" (still computed and shown)."""
    judge_check_set: Path | None = None
    """A calibration set of your own (JSONL in the built-in set's format); empty = the built-in one."""
    judge_timeout_s: float = Field(default=120.0, gt=0)
    judge_concurrency: int = Field(default=8, ge=1, le=256)
    """Judge requests in flight at once (vLLM batches them)."""
    answer_relevancy_strictness: int = Field(default=1, ge=1, le=10)
    """Questions the judge generates per answer; with greedy decoding (and the cache) more than one repeats itself."""
    cache_dir: Path = Field(default_factory=lambda: ragswap_home() / "eval-cache")
    """On-disk judge cache, keyed by endpoint model + prompt + schema + sampling settings."""
    cache: bool = True
    runs_dir: Path = Field(default_factory=lambda: Path("eval-runs"))
    """Where ``ragswap eval run`` writes run directories."""
    metrics: list[str] = Field(default_factory=lambda: list(ALL_METRICS))
    """Metrics computed by default; a metric whose inputs a sample lacks is skipped for that sample."""
    k: int = Field(default=5, ge=1, le=100)
    """Cut-off for nDCG@k and recall@k, and the default retrieval ``top_k``."""
    bootstrap_samples: int = Field(default=1000, ge=100)
    """Resamples for the 95 % confidence intervals in summaries and reports."""
    generation_max_tokens: int = Field(default=128, ge=1)
    """``max_tokens`` of the answers generated during a run."""
    generation_concurrency: int = Field(default=4, ge=1, le=256)


def judge_default(name: str) -> Any:
    """The ``eval`` section's default for ``name`` (e.g. ``judge_max_items``): the one source of the judge's
    defaults, so that a judge built without settings (:class:`eval.JudgeConfig`, :class:`eval.JudgeLLM`) behaves
    like one built from them."""
    return EvalSettings.model_fields[name].get_default(call_default_factory=True)
