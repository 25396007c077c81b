"""The four RAGAS metrics (``ragas.metrics.collections``) run with :class:`eval.judge.JudgeLLM`.

ragas returns NaN, or raises, when the judge's answer cannot be scored (no statements extracted, no verdicts).
Here every such case becomes a ``failed`` :class:`MetricScore` with the reason and the judge's raw outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from eval.embeddings import LocalEmbeddings
from eval.judge import JudgeError, JudgeLLM, record_calls, stop_recording
from eval.records import EvalSample, MetricScore

# When ragas yields NaN the reason is metric-specific; say what the judge failed to produce.
_NAN_REASONS = {
    "faithfulness": "the judge extracted no statements (or no verdicts) from the answer",
    "context_recall": "the judge classified no statements of the reference",
    "context_precision": "the judge gave no verdicts",
    "answer_relevancy": "the judge generated no question",
}


@dataclass
class JudgedMetrics:
    """The ragas metric objects, built once per judge."""

    judge: JudgeLLM
    embeddings: LocalEmbeddings | None
    strictness: int = 1
    few_shot: list[str] = field(default_factory=list)
    """Metrics that keep ragas's few-shot examples; the others drop them (a small judge copies the examples'
    statements, Einstein and John's major, instead of reading the input)."""

    def __post_init__(self) -> None:
        from ragas.metrics.collections import (
            AnswerRelevancy,
            ContextPrecisionWithReference,
            ContextRecall,
            Faithfulness,
        )

        self.metrics: dict[str, Any] = {
            "faithfulness": Faithfulness(llm=self.judge),
            "context_precision": ContextPrecisionWithReference(llm=self.judge),
            "context_recall": ContextRecall(llm=self.judge),
        }
        if self.embeddings is not None:
            self.metrics["answer_relevancy"] = AnswerRelevancy(
                llm=self.judge, embeddings=self.embeddings, strictness=self.strictness
            )
        for name, metric in self.metrics.items():
            if name not in self.few_shot:
                for attr in ("prompt", "statement_generator_prompt", "nli_statement_prompt"):
                    prompt = getattr(metric, attr, None)
                    if prompt is not None:
                        prompt.examples = []

    @staticmethod
    def inputs(
        name: str, sample: EvalSample, answer: str | None, contexts: list[str]
    ) -> dict[str, Any] | str:
        """The ragas keyword arguments for ``name``, or why the sample cannot be scored by it (skipped)."""
        if name in ("faithfulness", "answer_relevancy") and not answer:
            return "no answer"
        if name in ("faithfulness", "context_precision", "context_recall") and not contexts:
            return "no retrieved contexts"
        if name in ("context_precision", "context_recall") and not sample.reference:
            return "no reference answer"
        if name == "faithfulness":
            return {"user_input": sample.question, "response": answer, "retrieved_contexts": contexts}
        if name == "answer_relevancy":
            return {"user_input": sample.question, "response": answer}
        return {"user_input": sample.question, "reference": sample.reference, "retrieved_contexts": contexts}

    async def score(
        self, name: str, sample: EvalSample, answer: str | None, contexts: list[str]
    ) -> MetricScore:
        """Score one sample; never raises for a judge problem, never returns NaN."""
        kwargs = self.inputs(name, sample, answer, contexts)
        if isinstance(kwargs, str):
            return MetricScore(name=name, status="skipped", reason=kwargs)
        calls, token = record_calls()
        try:
            result = await self.metrics[name].ascore(**kwargs)
        except JudgeError as exc:
            return MetricScore(name=name, status="failed", reason=str(exc), judge_calls=calls)
        except Exception as exc:  # ragas raises ValueError/TypeError/ZeroDivisionError on odd judge output
            reason = f"metric raised {type(exc).__name__}: {exc}"
            return MetricScore(name=name, status="failed", reason=reason, judge_calls=calls)
        finally:
            stop_recording(token)
        value = getattr(result, "value", None)
        if value is None or not isinstance(value, int | float) or math.isnan(float(value)):
            reason = getattr(result, "reason", None) or _NAN_REASONS[name]
            return MetricScore(name=name, status="failed", reason=str(reason), judge_calls=calls)
        value = float(value)
        if not -1e-6 <= value <= 1 + 1e-6:
            return MetricScore(
                name=name, status="failed", reason=f"score {value} outside [0, 1]", judge_calls=calls
            )
        return MetricScore(name=name, status="ok", value=min(max(value, 0.0), 1.0), judge_calls=calls)
