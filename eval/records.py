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
    responses: dict[str, str] | None = None
    """Answers already given, by the model that gave them (a shadow capture's served version and candidate):
    each model is a config of its own, scored as given and compared paired over the same rows."""
    retrieved_contexts: list[str] | None = None
    retrieved_context_ids: list[str] | None = None
    capture: dict[str, Any] | None = None
    """Where a captured row came from (``serving``'s shadow capture: alias, versions, latencies); kept, not
    scored."""

    def given_response(self, model: str) -> str | None:
        """The dataset's own answer for ``model`` (``responses``), else its single ``response``."""
        if self.responses is not None:
            return self.responses.get(model)
        return self.response

    def given_latency(self, model: str) -> float | None:
        latency = (self.capture or {}).get("latency_s")
        value = latency.get(model) if isinstance(latency, dict) else None
        return float(value) if isinstance(value, int | float) else None


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
    error_kind: Literal["parse", "request", "rejected", "context"] | None = None
    """Set on failure: see :class:`eval.judge.JudgeError`."""
    note: str | None = None
    """Which part of a split prompt this call was (e.g. ``passages 3-4 of 4``), and how many examples it kept."""
    prompt_tokens: int | None = None
    """Prompt tokens as ragswap counted them before sending (the judge's tokenizer, or the estimate)."""
    usage_prompt_tokens: int | None = None
    """Prompt tokens as the judge endpoint reported them (``usage.prompt_tokens``), when it was called."""
    max_tokens: int | None = None
    """The output limit of the last attempt: ``max_tokens``, or more on a retry after an answer was cut off."""


ScoreStatus = Literal["ok", "failed", "skipped"]
FailureKind = Literal["parse", "request", "rejected", "context", "metric", "platform"]


class MetricScore(BaseModel):
    """A metric's verdict on one sample. ``value`` is set only when ``status == "ok"``: a failure is never a 0."""

    name: str
    status: ScoreStatus
    value: float | None = None
    reason: str | None = None
    failure_kind: FailureKind | None = None
    """Why a failed score failed: the judge's output (``parse``), its endpoint (``request``, ``rejected``), a prompt
    that does not fit the judge's window (``context``), the metric's formula (``metric``), or retrieval and
    generation for the sample (``platform``)."""
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


class MetricAgreement(BaseModel):
    """How often the judge agreed with the known answers of one judged metric's calibration items.

    ``reliable`` is false when the lower bound of the 95 % (Wilson) interval of the agreement is not above
    ``chance``: such a metric is still computed and shown, flagged "judge unreliable".
    """

    metric: str
    task: str
    """What the items test, e.g. "supported vs contradicted statements"."""
    n: int
    n_agree: int
    n_failed: int = 0
    """Items the judge gave no usable answer for (counted as disagreements)."""
    agreement: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    chance: float = 0.5
    reliable: bool = False

    def label(self) -> str:
        """``0.85 [0.64, 0.95]`` plus `` judge unreliable`` when flagged."""
        if self.agreement is None or self.ci_low is None or self.ci_high is None:
            return "no calibration answers (judge unreliable)"
        text = f"{self.agreement:.2f} [{self.ci_low:.2f}, {self.ci_high:.2f}]"
        return text if self.reliable else f"{text} judge unreliable"


class JudgeCheck(BaseModel):
    """The judge's calibration result, cached per judge model + endpoint + prompt version + calibration set."""

    model: str
    url: str
    prompt_version: str
    calibration_set: str
    calibration_sha: str
    created_at: str
    seconds: float
    cached: bool = False
    metrics: dict[str, MetricAgreement]

    def unreliable(self) -> list[str]:
        """Judged metrics whose judge is at or below chance on the calibration set."""
        return [name for name, m in self.metrics.items() if not m.reliable]


class MetricSummary(BaseModel):
    """Aggregate of one metric under one config; failed and skipped samples are counted, never averaged."""

    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n_ok: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    failure_reasons: dict[str, int] = Field(default_factory=dict)
    judge: MetricAgreement | None = None
    """For judged metrics: the judge's agreement on this metric's calibration items (``judge.reliable``)."""

    @property
    def failed_fraction(self) -> float:
        """Failed samples / samples that should have scored (skipped ones lack the inputs and do not count)."""
        attempted = self.n_ok + self.n_failed
        return self.n_failed / attempted if attempted else 0.0


Verdict = Literal["better", "worse", "no difference", "insufficient"]


class PairedDelta(BaseModel):
    """One metric of candidate − baseline over the samples both scored (paired statistics, not two CIs).

    ``ci_low``/``ci_high``: percentile bootstrap of the mean per-sample difference; ``p_value``: Wilcoxon
    signed-rank (two-sided, zero differences dropped); ``sign_p_value``: the sign test on better/worse counts.
    ``verdict`` is "better"/"worse" only when the CI excludes 0 and ``p_value`` < 0.05.
    """

    metric: str
    baseline: str
    candidate: str
    n_pairs: int
    n_unpaired: int = 0
    """Samples scored under only one of the two configs (failed or skipped in the other): left out."""
    mean_baseline: float | None = None
    mean_candidate: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    sign_p_value: float | None = None
    n_better: int = 0
    n_worse: int = 0
    n_tied: int = 0
    verdict: Verdict = "insufficient"
    judge_unreliable: bool = False

    def phrase(self) -> str:
        """``better on rouge_l by +0.21 [0.12, 0.30]``, ``no detectable difference on ndcg``..."""
        flag = " (judge unreliable)" if self.judge_unreliable else ""
        if self.verdict in ("better", "worse") and self.delta is not None:
            assert self.ci_low is not None and self.ci_high is not None
            return (
                f"{self.verdict} on {self.metric} by {self.delta:+.2f} [{self.ci_low:.2f}, {self.ci_high:.2f}]"
                f"{flag}"
            )
        if self.verdict == "insufficient":
            return f"too few paired samples on {self.metric} (n={self.n_pairs}){flag}"
        return f"no detectable difference on {self.metric}{flag}"


class Comparison(BaseModel):
    """Every shared metric of one candidate config against one baseline config, over the same samples."""

    baseline: str
    candidate: str
    deltas: list[PairedDelta]

    def delta(self, metric: str) -> PairedDelta | None:
        return next((d for d in self.deltas if d.metric == metric), None)

    def verdict_line(self) -> str:
        """``B vs A: better on rouge_l by +0.21 [0.12, 0.30]; no detectable difference on faithfulness, ndcg``."""
        parts = [d.phrase() for d in self.deltas if d.verdict in ("better", "worse")]
        same = [d.metric for d in self.deltas if d.verdict == "no difference"]
        few = [d.metric for d in self.deltas if d.verdict == "insufficient"]
        if same:
            parts.append("no detectable difference on " + ", ".join(same))
        if few:
            parts.append("too few paired samples on " + ", ".join(few))
        pairs = max((d.n_pairs for d in self.deltas), default=0)
        return f"{self.candidate} vs {self.baseline} ({pairs} paired samples): " + "; ".join(parts)


class JudgeInfo(BaseModel):
    url: str | None = None
    model: str | None = None
    structured_output: bool = True
    context_tokens: int | None = None
    """The judge's context window the prompts were budgeted against (set once the run has asked the judge)."""
    context_source: str | None = None
    """Where ``context_tokens`` came from: ``setting``, ``/v1/models``, ``setting < /v1/models`` or ``default``."""
    prompt_limit: int | None = None
    """Prompt tokens allowed per call: the window less ``max_tokens`` and a small margin."""
    token_counter: str | None = None
    """How prompt tokens were counted: the judge's tokenizer (local) or a characters-per-token estimate."""


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
    samples_per_minute: float | None = None
    """(config, sample) pairs answered and scored per minute in the last execution (resumed pairs excluded)."""
    context_overflow_failures: int = 0
    """Judge calls that failed because a prompt did not fit the judge's window (0 when budgeting works)."""
    judge_check: JudgeCheck | None = None
    """The judge's calibration result (``None`` when no metric is judged or the check is off)."""
    comparisons: list[Comparison] = Field(default_factory=list)
    """Paired comparisons of every config against every earlier one (the first config is the baseline)."""

    def comparison(self, baseline: str, candidate: str) -> Comparison | None:
        """The paired comparison candidate − baseline, flipped from the stored one when needed."""
        for comparison in self.comparisons:
            if (comparison.baseline, comparison.candidate) == (baseline, candidate):
                return comparison
            if (comparison.baseline, comparison.candidate) == (candidate, baseline):
                return flip(comparison)
        return None


def flip(comparison: Comparison) -> Comparison:
    """The same comparison seen from the other side (baseline ↔ candidate): deltas negate, verdicts swap."""
    swapped: dict[str, Verdict] = {"better": "worse", "worse": "better"}
    deltas = []
    for d in comparison.deltas:
        deltas.append(
            d.model_copy(
                update={
                    "baseline": d.candidate,
                    "candidate": d.baseline,
                    "mean_baseline": d.mean_candidate,
                    "mean_candidate": d.mean_baseline,
                    "delta": None if d.delta is None else -d.delta,
                    "ci_low": None if d.ci_high is None else -d.ci_high,
                    "ci_high": None if d.ci_low is None else -d.ci_low,
                    "n_better": d.n_worse,
                    "n_worse": d.n_better,
                    "verdict": swapped.get(d.verdict, d.verdict),
                }
            )
        )
    return Comparison(baseline=comparison.candidate, candidate=comparison.baseline, deltas=deltas)
