"""Scores one trace with every requested metric: exact ones in-process, judged ones through the judge."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.embeddings import LocalEmbeddings
from eval.judge import JudgeLLM
from eval.metrics import ir
from eval.metrics.answer import rouge_l
from eval.metrics.judged import JudgedMetrics
from eval.records import EvalSample, JudgeCheck, JudgeInfo, MetricScore, RetrievedChunk, SampleTrace
from eval.settings import ALL_METRICS, JUDGED_METRICS, EvalSettings, judge_default


@dataclass
class JudgeConfig:
    """Where the judge lives; any OpenAI-compatible endpoint."""

    url: str
    model: str
    api_key: str = "x"
    structured_output: bool = True
    max_retries: int = judge_default("judge_max_retries")
    max_tokens: int = judge_default("judge_max_tokens")
    temperature: float = judge_default("judge_temperature")
    timeout_s: float = judge_default("judge_timeout_s")
    concurrency: int = judge_default("judge_concurrency")
    cache_dir: Path | None = None
    max_items: int = judge_default("judge_max_items")
    max_chars: int = judge_default("judge_max_chars")
    few_shot: list[str] = field(default_factory=lambda: judge_default("judge_few_shot"))
    context_tokens: int | None = None
    """The judge's window; ``None`` = its ``/v1/models`` ``max_model_len`` (see :mod:`eval.budget`)."""
    tokenizer_dir: Path | None = None
    """The judge model's tokenizer when it is local (exact token counts); ``None`` = estimate."""
    chars_per_token: float = judge_default("judge_chars_per_token")
    judge_check: bool = False
    """Check the judge on the calibration set before scoring (runs built from settings turn it on)."""
    check_cache_dir: Path | None = None
    """Where judge-check results are cached (kept even when the judge-output ``cache_dir`` is off)."""
    calibration_set: Path | None = None
    """A labelled set of your own; ``None`` = the built-in one."""

    @classmethod
    def from_settings(
        cls,
        settings: EvalSettings,
        url: str,
        model: str,
        api_key: str | None,
        tokenizer_dir: Path | None = None,
    ) -> JudgeConfig:
        return cls(
            url=url,
            model=model,
            api_key=api_key or "x",
            structured_output=settings.structured_output,
            max_retries=settings.judge_max_retries,
            max_tokens=settings.judge_max_tokens,
            temperature=settings.judge_temperature,
            timeout_s=settings.judge_timeout_s,
            concurrency=settings.judge_concurrency,
            cache_dir=settings.cache_dir if settings.cache else None,
            max_items=settings.judge_max_items,
            max_chars=settings.judge_max_chars,
            few_shot=list(settings.judge_few_shot),
            context_tokens=settings.judge_context_tokens,
            tokenizer_dir=tokenizer_dir,
            chars_per_token=settings.judge_chars_per_token,
            judge_check=settings.judge_check,
            check_cache_dir=settings.cache_dir,
            calibration_set=settings.judge_check_set,
        )

    def info(self) -> JudgeInfo:
        return JudgeInfo(url=self.url, model=self.model, structured_output=self.structured_output)

    def build(self, asgi_app: Any | None = None) -> JudgeLLM:
        """The judge; with ``asgi_app`` its calls go in-process to that app (the gateway judging for itself)."""
        from openai import AsyncOpenAI

        from eval.cache import JudgeCache
        from eval.platform import EVALUATION_TRAFFIC, openai_http_client

        base = self.url.rstrip("/")
        base = base if base.endswith("/v1") else f"{base}/v1"
        client = AsyncOpenAI(
            base_url=base,
            api_key=self.api_key,
            timeout=self.timeout_s,
            max_retries=0,
            default_headers=EVALUATION_TRAFFIC,
            http_client=openai_http_client(asgi_app, self.timeout_s),
        )
        return JudgeLLM(
            client,
            self.model,
            structured_output=self.structured_output,
            max_retries=self.max_retries,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            concurrency=self.concurrency,
            cache=JudgeCache(self.cache_dir) if self.cache_dir else None,
            max_items=self.max_items,
            max_chars=self.max_chars,
            context_tokens=self.context_tokens,
            tokenizer_dir=self.tokenizer_dir,
            chars_per_token=self.chars_per_token,
        )


def ranked_ids(chunks: Sequence[RetrievedChunk], relevant: set[str]) -> list[str]:
    """Chunk ids mapped to the granularity of the reference ids (chunk or document), best rank first."""
    ids = []
    for chunk in chunks:
        if chunk.id in relevant or chunk.doc_id is None:
            ids.append(chunk.id)
        else:
            ids.append(chunk.doc_id)
    return ir.dedupe_ranked(ids)


@dataclass
class Scorer:
    """Computes ``metrics`` for traces; judged metrics need ``judge``, similarity and relevancy need embeddings."""

    metrics: list[str]
    judge: JudgeLLM | None = None
    embeddings: LocalEmbeddings | None = None
    k: int = 5
    strictness: int = 1
    few_shot: list[str] = field(default_factory=lambda: ["answer_relevancy", "context_recall"])
    judge_url: str | None = None
    """The judge's endpoint as configured (judge-check cache key and reports)."""
    check_judge: bool = False
    """Run the judge check in :meth:`prepare` (see :mod:`eval.calibration`)."""
    check_cache_dir: Path | None = None
    calibration_set: Path | None = None
    judge_check: JudgeCheck | None = field(default=None, init=False)
    """Set by :meth:`prepare` when ``check_judge``: the judge's calibration agreement per judged metric."""
    _judged: JudgedMetrics | None = field(default=None, init=False, repr=False)
    _prepared: bool = field(default=False, init=False, repr=False)
    _prepare_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _after_check: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(ALL_METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {list(ALL_METRICS)}")
        needs_judge = [m for m in self.metrics if m in JUDGED_METRICS]
        if needs_judge and self.judge is None:
            raise ValueError(f"metrics {needs_judge} need a judge")
        if (
            "answer_relevancy" in self.metrics or "semantic_similarity" in self.metrics
        ) and not self.embeddings:
            raise ValueError("answer_relevancy and semantic_similarity need embeddings")
        if needs_judge and self.judge is not None:
            self._judged = JudgedMetrics(self.judge, self.embeddings, self.strictness, self.few_shot)

    def _exact(self, name: str, sample: EvalSample, trace: SampleTrace) -> MetricScore:
        def skipped(reason: str) -> MetricScore:
            return MetricScore(name=name, status="skipped", reason=reason)

        def ok(value: float) -> MetricScore:
            return MetricScore(name=name, status="ok", value=value)

        if name in ("rouge_l", "semantic_similarity"):
            if not sample.reference:
                return skipped("no reference answer")
            if not trace.answer:
                return skipped("no answer")
            if name == "rouge_l":
                return ok(rouge_l(trace.answer, sample.reference))
            assert self.embeddings is not None
            return ok(self.embeddings.similarity(trace.answer, sample.reference))
        relevant = set(sample.reference_context_ids or [])
        if not relevant:
            return skipped("no reference_context_ids")
        if not trace.retrieved:
            return skipped("no retrieved contexts")
        ranked = ranked_ids(trace.retrieved, relevant)
        compute: dict[str, Callable[[], float]] = {
            "id_context_precision": lambda: ir.id_context_precision(ranked, relevant),
            "id_context_recall": lambda: ir.id_context_recall(ranked, relevant),
            "ndcg": lambda: ir.ndcg_at_k(ranked, relevant, self.k),
            "recall": lambda: ir.recall_at_k(ranked, relevant, self.k),
            "mrr": lambda: ir.mrr(ranked, relevant),
        }
        return ok(compute[name]())

    def close(self) -> None:
        if self.judge is not None and self.judge.cache is not None:
            self.judge.cache.close()

    async def prepare(self) -> None:
        """Find the judge's context window and tokenizer, then (``check_judge``) run the judge check; once.

        Called by the runner before the first sample; :meth:`score` calls it too, so direct use works.
        """
        async with self._prepare_lock:
            if self._prepared:
                return
            if self.judge is not None:
                await self.judge.prepare()
                if self.check_judge and self._judged is not None:
                    self.judge_check = await self.run_judge_check()
                self._after_check = self.judge.counters()
            self._prepared = True

    async def run_judge_check(self, *, refresh: bool = False) -> JudgeCheck:
        """The judge's agreement on the calibration set for this scorer's judged metrics (cached)."""
        from eval.calibration import CALIBRATION_SET, run_judge_check

        if self.judge is None or self._judged is None:
            raise ValueError("no judged metric: nothing to check")
        return await run_judge_check(
            self._judged,
            [m for m in self.metrics if m in JUDGED_METRICS],
            url=self.judge_url or str(getattr(self.judge.client, "base_url", "")),
            cache_dir=self.check_cache_dir,
            calibration=self.calibration_set or CALIBRATION_SET,
            refresh=refresh,
        )

    def judge_stats(self) -> dict[str, int]:
        """The judge's call counters for the samples scored, without the judge check's calls."""
        if self.judge is None:
            return {}
        now = self.judge.counters()
        return {name: value - self._after_check.get(name, 0) for name, value in now.items()}

    def judge_info(self, info: JudgeInfo) -> JudgeInfo:
        """``info`` completed with the budget the prompts were fitted to (window, its source, the counter)."""
        budget = self.judge.budget if self.judge is not None else None
        if budget is None:
            return info
        return info.model_copy(
            update={
                "context_tokens": budget.window.tokens,
                "context_source": budget.window.source,
                "prompt_limit": budget.prompt_limit,
                "token_counter": budget.counter.description,
            }
        )

    async def score(self, sample: EvalSample, trace: SampleTrace) -> dict[str, MetricScore]:
        """Every requested metric for one trace; a trace with an error fails its metrics with that error."""
        if trace.error:
            return {
                m: MetricScore(name=m, status="failed", reason=trace.error, failure_kind="platform")
                for m in self.metrics
            }
        if not self._prepared:
            await self.prepare()
        scores: dict[str, MetricScore] = {}
        judged = [m for m in self.metrics if m in JUDGED_METRICS]
        for name in self.metrics:
            if name in JUDGED_METRICS:
                continue
            if name == "semantic_similarity":
                scores[name] = await asyncio.to_thread(self._exact, name, sample, trace)
            else:
                scores[name] = self._exact(name, sample, trace)
        if judged:
            assert self._judged is not None
            contexts = [c.text for c in trace.retrieved if c.text]
            results = await asyncio.gather(
                *(self._judged.score(name, sample, trace.answer, contexts) for name in judged)
            )
            scores.update({r.name: r for r in results})
        return {name: scores[name] for name in self.metrics}


EMBEDDING_METRICS = frozenset({"answer_relevancy", "semantic_similarity"})
"""The metrics that encode text with the local embedding model."""


def needs_embeddings(metrics: list[str]) -> bool:
    """Whether scoring ``metrics`` needs the embedding model (so callers resolve it only then)."""
    return bool(EMBEDDING_METRICS & set(metrics))


def build_scorer(
    metrics: list[str],
    judge: JudgeConfig | None,
    embedding_path: Path | None,
    *,
    k: int = 5,
    strictness: int = 1,
    judge_asgi_app: Any | None = None,
    embeddings: LocalEmbeddings | None = None,
) -> Scorer:
    """A :class:`Scorer` with its judge and embeddings built (embeddings only when a metric needs them).

    Raises:
        ValueError: a metric needs embeddings and neither ``embeddings`` nor ``embedding_path`` is given (the
            caller resolves the configured model, e.g. with ``eval.embeddings.default_embedding_path``).
    """
    if needs_embeddings(metrics) and embeddings is None:
        if embedding_path is None:
            raise ValueError(
                f"metrics {sorted(EMBEDDING_METRICS & set(metrics))} need the embedding model: pass embedding_path"
            )
        embeddings = LocalEmbeddings(embedding_path)
    needs_judge = bool(set(JUDGED_METRICS) & set(metrics))
    return Scorer(
        metrics=list(metrics),
        judge=judge.build(judge_asgi_app) if (judge and needs_judge) else None,
        embeddings=embeddings,
        k=k,
        strictness=strictness,
        few_shot=list(judge.few_shot) if judge else [],
        judge_url=judge.url if judge else None,
        check_judge=bool(judge and judge.judge_check),
        check_cache_dir=judge.check_cache_dir if judge else None,
        calibration_set=judge.calibration_set if judge else None,
    )
