"""The four RAGAS metrics with ragas's prompts, output models and score formulas, fitted to the judge's window.

ragas (``ragas.metrics.collections``) builds each step's prompt and sends it as it is, however long; a small judge
then answers "maximum context length" for every sample with a few long passages. Here every prompt is fitted to
the judge's budget (:class:`eval.budget.PromptBudget`) before it is sent, in this order:

1. the prompt exactly as ragas builds it (with ragas's few-shot examples for the metrics in ``few_shot``);
2. else with fewer few-shot examples, down to none (they are the least informative part of a prompt);
3. else with the retrieved passages split across calls and the answers combined per ragas's definition:

   - **faithfulness** (share of the answer's statements the contexts support): every batch of passages judges
     every statement (the output schema asks for exactly one verdict per statement); a statement is supported
     when any batch supports it;
   - **context recall** (share of the reference's statements attributable to the contexts): the first batch is
     ragas's call (the judge extracts and classifies the reference's statements); later batches classify the
     statements still unattributed, one verdict each;
   - **context precision** judges each passage on its own already; a passage too long for one call is split at
     sentence borders and is useful when any piece is;
   - **answer relevancy** has no passages; an answer too long for one call fails (see 4).

   A statement needing two passages that landed in different batches is then judged unsupported: splitting is
   only used when the passages do not fit together, and the trace records it (``judge_calls[].note``).
4. only when even the prompt without passages and examples does not fit does the metric fail, with a reason naming
   what did not fit and what the window allows.

ragas returns NaN, or raises, when the judge's answer cannot be scored (no statements extracted, no verdicts).
Here every such case becomes a ``failed`` :class:`MetricScore` with the reason and the judge's raw outputs.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import math
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, create_model

from eval.budget import PromptBudget, PromptTooLongError, pack, split_to_fit
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

T = TypeVar("T")
Rendered = tuple[str, int]
"""A prompt that fits, and how many few-shot examples it kept."""
Planned = tuple[list[str], str, int]
"""The passages (or pieces) of one call, its prompt, and how many few-shot examples it kept."""


@functools.cache
def exactly(model: type[BaseModel], list_field: str, n: int) -> type[BaseModel]:
    """``model`` with ``list_field`` required to hold exactly ``n`` items (one verdict per known statement).

    Same name as ``model``, so traces and the schema name sent to the judge stay ragas's.
    """
    (item,) = typing.get_args(model.model_fields[list_field].annotation)
    constrained = Annotated[list[item], Field(min_length=n, max_length=n)]  # type: ignore[valid-type]
    fields: dict[str, Any] = {list_field: (constrained, ...)}
    return create_model(model.__name__, __base__=model, **fields)


async def settle(*calls: Awaitable[T]) -> list[T]:
    """Await every call concurrently, let all of them finish, then raise the first failure (if any).

    Unlike a plain ``gather``, no call is left running in the background after one fails, so a metric's judge
    calls are all accounted for (and recorded in its trace) when it returns.
    """
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if not isinstance(r, BaseException)]


def _variants(prompt: Any, keep_examples: bool) -> list[Any]:
    """Copies of a ragas prompt with its few-shot examples, most first (only the example-free one if not kept)."""
    examples = list(prompt.examples) if keep_examples else []
    out = []
    for k in range(len(examples), -1, -1):
        variant = copy.copy(prompt)
        variant.examples = examples[:k]
        out.append(variant)
    return out


def _note(examples: int, part: int | None = None, parts: int | None = None) -> str:
    shots = f"{examples} example{'s' if examples != 1 else ''}"
    return shots if part is None or parts in (None, 1) else f"batch {part} of {parts}, {shots}"


@dataclass
class JudgedMetrics:
    """The ragas metric objects, built once per judge, and the budget-aware way of asking them."""

    judge: JudgeLLM
    embeddings: LocalEmbeddings | None
    strictness: int = 1
    few_shot: list[str] = field(default_factory=list)
    """Metrics that keep ragas's few-shot examples (while they fit); the others drop them (a small judge copies
    the examples' statements, Einstein and John's major, instead of reading the input)."""

    def __post_init__(self) -> None:
        from ragas.metrics.collections import (
            AnswerRelevancy,
            ContextPrecisionWithReference,
            ContextRecall,
            Faithfulness,
        )

        self.faithfulness = Faithfulness(llm=self.judge)
        self.context_precision = ContextPrecisionWithReference(llm=self.judge)
        self.context_recall = ContextRecall(llm=self.judge)
        keep = set(self.few_shot)
        self._prompts: dict[str, list[Any]] = {
            "statements": _variants(self.faithfulness.statement_generator_prompt, "faithfulness" in keep),
            "nli": _variants(self.faithfulness.nli_statement_prompt, "faithfulness" in keep),
            "context_precision": _variants(self.context_precision.prompt, "context_precision" in keep),
            "context_recall": _variants(self.context_recall.prompt, "context_recall" in keep),
        }
        # Answer relevancy is run by ragas's own ascore (its cosine formula); one metric object per example count.
        self._relevancy: list[Any] = []
        if self.embeddings is not None:
            template = AnswerRelevancy(llm=self.judge, embeddings=self.embeddings, strictness=self.strictness)
            for variant in _variants(template.prompt, "answer_relevancy" in keep):
                metric = copy.copy(template)
                metric.prompt = variant
                self._relevancy.append(metric)

    @property
    def budget(self) -> PromptBudget:
        assert self.judge.budget is not None, "call `await judge.prepare()` first"
        return self.judge.budget

    def prompt_fingerprint(self) -> list[Any]:
        """What the prompts are made of (instructions, example counts), for the judge check's cache key."""
        return [
            (name, variants[0].instruction, len(variants[0].examples))
            for name, variants in self._prompts.items()
        ] + [("answer_relevancy", m.prompt.instruction, len(m.prompt.examples)) for m in self._relevancy[:1]]

    # -- fitting ------------------------------------------------------------------------------------------------
    def _fit(self, step: str, data: BaseModel) -> Rendered | None:
        """ragas's prompt for ``data`` with as many few-shot examples as fit; ``None`` if none fits."""
        for variant in self._prompts[step]:
            text = variant.to_string(data)
            if self.budget.fits(text):
                return text, len(variant.examples)
        return None

    def _too_long(self, step: str, data: BaseModel, what: str) -> PromptTooLongError:
        bare = self._prompts[step][-1].to_string(data)
        return PromptTooLongError(
            f"judge prompt too long: {what} takes {self.budget.count(bare)} tokens without examples, but "
            f"{self.budget.describe()}"
        )

    def _plan(
        self, step: str, build: Callable[[list[str]], BaseModel], contexts: list[str], what: str
    ) -> list[Planned]:
        """One prompt per batch of passages: all passages in one prompt when they fit, else as few as fit."""
        whole = self._fit(step, build(contexts))
        if whole is not None:
            return [(list(contexts), *whole)]
        if self._fit(step, build([""])) is None:
            raise self._too_long(step, build([""]), what)
        planned = []
        for batch in pack(contexts, lambda b: self._fit(step, build(b)) is not None):
            rendered = self._fit(step, build(batch))
            assert rendered is not None
            planned.append((batch, *rendered))
        return planned

    def _plan_one(self, step: str, build: Callable[[str], BaseModel], text: str, what: str) -> list[Planned]:
        """The prompt for one passage (or answer), or for its pieces when it is too long on its own."""
        whole = self._fit(step, build(text))
        if whole is not None:
            return [([text], *whole)]
        if self._fit(step, build("")) is None:
            raise self._too_long(step, build(""), what)
        planned = []
        for piece in split_to_fit(text, lambda p: self._fit(step, build(p)) is not None):
            rendered = self._fit(step, build(piece))
            assert rendered is not None
            planned.append(([piece], *rendered))
        return planned

    async def _ask(
        self, plan: Sequence[Planned], model: type[BaseModel], parts: int | None = None
    ) -> list[Any]:
        """Send every planned prompt concurrently (the judge's semaphore bounds what is in flight)."""
        return await settle(
            *(
                self.judge.agenerate(text, model, note=_note(shots, i, parts or len(plan)))
                for i, (_, text, shots) in enumerate(plan, start=1)
            )
        )

    # -- the ragas steps, budgeted -----------------------------------------------------------------------------
    async def statements(self, question: str, answer: str) -> list[str]:
        """Faithfulness step 1: the answer's atomic statements (an answer too long for one call is split)."""
        from ragas.metrics.collections.faithfulness.util import (
            StatementGeneratorInput,
            StatementGeneratorOutput,
        )

        await self.judge.prepare()
        plan = await asyncio.to_thread(
            self._plan_one,
            "statements",
            lambda text: StatementGeneratorInput(question=question, answer=text),
            answer,
            "the question and answer",
        )
        outputs = await self._ask(plan, StatementGeneratorOutput)
        # Once each: a small judge repeats a statement, and a repeated one would weigh its verdict twice.
        distinct: dict[str, str] = {}
        for out in outputs:
            for statement in out.statements:
                key = " ".join(statement.lower().split()).rstrip(".")
                if key:
                    distinct.setdefault(key, statement.strip())
        return list(distinct.values())

    async def verdicts(self, statements: list[str], contexts: list[str]) -> list[int]:
        """Faithfulness step 2: one 0/1 verdict per statement, supported by any batch of passages."""
        from ragas.metrics.collections.faithfulness.util import NLIStatementInput, NLIStatementOutput

        await self.judge.prepare()
        plan = await asyncio.to_thread(
            self._plan,
            "nli",
            lambda batch: NLIStatementInput(context="\n".join(batch), statements=statements),
            contexts,
            f"the {len(statements)} statements to judge",
        )
        outputs = await self._ask(plan, exactly(NLIStatementOutput, "statements", len(statements)))
        return [max(int(out.statements[i].verdict == 1) for out in outputs) for i in range(len(statements))]

    async def context_verdict(self, question: str, reference: str, context: str) -> int:
        """Context precision for one passage: 1 if the judge finds it useful (any piece, if it was split)."""
        from ragas.metrics.collections.context_precision.util import (
            ContextPrecisionInput,
            ContextPrecisionOutput,
        )

        await self.judge.prepare()
        plan = await asyncio.to_thread(
            self._plan_one,
            "context_precision",
            lambda text: ContextPrecisionInput(question=question, context=text, answer=reference),
            context,
            "the question and reference",
        )
        outputs = await self._ask(plan, ContextPrecisionOutput)
        return max(int(out.verdict == 1) for out in outputs)

    async def attributions(
        self, question: str, reference: str, contexts: list[str], statements: list[str] | None = None
    ) -> list[int]:
        """Context recall: one 0/1 per reference statement, attributed when any batch of passages holds it.

        Without ``statements`` the judge extracts them from ``reference`` (ragas's call, on the first batch);
        with them (the calibration set), exactly those statements are classified.
        """
        from ragas.metrics.collections.context_recall.util import ContextRecallInput, ContextRecallOutput

        await self.judge.prepare()

        def build(answer: str) -> Callable[[list[str]], BaseModel]:
            return lambda batch: ContextRecallInput(
                question=question, context="\n".join(batch), answer=answer
            )

        if statements is not None:
            known = list(statements)
            attributed = [0] * len(known)
            rest = contexts
        else:
            plan = await asyncio.to_thread(
                self._plan, "context_recall", build(reference), contexts, "the question and reference"
            )
            (first,) = await self._ask(plan[:1], ContextRecallOutput, parts=len(plan))
            known = [c.statement for c in first.classifications]
            attributed = [int(c.attributed == 1) for c in first.classifications]
            rest = [c for batch, _, _ in plan[1:] for c in batch]
        pending = [i for i, a in enumerate(attributed) if not a]
        if rest and pending:
            answer = "\n".join(known[i] for i in pending)
            plan = await asyncio.to_thread(
                self._plan, "context_recall", build(answer), rest, "the question and reference statements"
            )
            outputs = await self._ask(plan, exactly(ContextRecallOutput, "classifications", len(pending)))
            for j, i in enumerate(pending):
                attributed[i] = max(int(out.classifications[j].attributed == 1) for out in outputs)
        return attributed

    async def relevancy(self, question: str, answer: str) -> float:
        """ragas's answer relevancy (questions generated from the answer vs the question, MiniLM cosine)."""
        from ragas.metrics.collections.answer_relevancy.util import AnswerRelevanceInput

        if not self._relevancy:
            raise ValueError("answer_relevancy needs embeddings")
        await self.judge.prepare()

        def pick() -> Any:
            data = AnswerRelevanceInput(response=answer)
            for metric in self._relevancy:
                if self.budget.fits(metric.prompt.to_string(data)):
                    return metric
            bare = self._relevancy[-1].prompt.to_string(data)
            raise PromptTooLongError(
                f"judge prompt too long: the answer takes {self.budget.count(bare)} tokens without examples, "
                f"but {self.budget.describe()}"
            )

        metric = await asyncio.to_thread(pick)
        result = await metric.ascore(user_input=question, response=answer)
        return float(result.value)

    # -- metrics -------------------------------------------------------------------------------------------------
    @staticmethod
    def inputs(name: str, sample: EvalSample, answer: str | None, contexts: list[str]) -> str | None:
        """Why the sample cannot be scored by ``name`` (skipped), or ``None`` when it has the inputs."""
        if name in ("faithfulness", "answer_relevancy") and not answer:
            return "no answer"
        if name in ("faithfulness", "context_precision", "context_recall") and not contexts:
            return "no retrieved contexts"
        if name in ("context_precision", "context_recall") and not sample.reference:
            return "no reference answer"
        return None

    async def _value(self, name: str, sample: EvalSample, answer: str, contexts: list[str]) -> float:
        question, reference = sample.question, sample.reference or ""
        if name == "faithfulness":
            from ragas.metrics.collections.faithfulness.util import (
                NLIStatementOutput,
                StatementFaithfulnessAnswer,
            )

            statements = await self.statements(question, answer)
            if not statements:
                return math.nan
            verdicts = await self.verdicts(statements, contexts)
            judged = NLIStatementOutput(
                statements=[
                    StatementFaithfulnessAnswer(statement=s, reason="", verdict=v)
                    for s, v in zip(statements, verdicts, strict=True)
                ]
            )
            return float(self.faithfulness._compute_score(judged))
        if name == "context_precision":
            verdicts = await settle(*(self.context_verdict(question, reference, c) for c in contexts))
            return float(self.context_precision._calculate_average_precision(verdicts))
        if name == "context_recall":
            attributed = await self.attributions(question, reference, contexts)
            return sum(attributed) / len(attributed) if attributed else math.nan
        if name == "answer_relevancy":
            return await self.relevancy(question, answer)
        raise ValueError(f"not a judged metric: {name}")

    async def score(
        self, name: str, sample: EvalSample, answer: str | None, contexts: list[str]
    ) -> MetricScore:
        """Score one sample; never raises for a judge problem, never returns NaN."""
        missing = self.inputs(name, sample, answer, contexts)
        if missing is not None:
            return MetricScore(name=name, status="skipped", reason=missing)
        assert answer is not None or name in ("context_precision", "context_recall")
        calls, token = record_calls()
        try:
            value = await self._value(name, sample, answer or "", contexts)
        except JudgeError as exc:
            return MetricScore(
                name=name, status="failed", reason=str(exc), failure_kind=exc.kind, judge_calls=calls
            )
        except PromptTooLongError as exc:
            return MetricScore(
                name=name, status="failed", reason=str(exc), failure_kind="context", judge_calls=calls
            )
        except Exception as exc:  # ragas raises ValueError/TypeError/ZeroDivisionError on odd judge output
            reason = f"metric raised {type(exc).__name__}: {exc}"
            return MetricScore(
                name=name, status="failed", reason=reason, failure_kind="metric", judge_calls=calls
            )
        finally:
            stop_recording(token)
        if math.isnan(value):
            return MetricScore(
                name=name,
                status="failed",
                reason=_NAN_REASONS[name],
                failure_kind="metric",
                judge_calls=calls,
            )
        if not -1e-6 <= value <= 1 + 1e-6:
            return MetricScore(
                name=name,
                status="failed",
                reason=f"score {value} outside [0, 1]",
                failure_kind="metric",
                judge_calls=calls,
            )
        return MetricScore(name=name, status="ok", value=min(max(value, 0.0), 1.0), judge_calls=calls)
