"""Judge calibration: is the configured judge better than chance at each judged metric's task?

An LLM judge's score is only as good as the judge. A 135M model scores every passage "not useful" as readily as a
capable model scores it right, and the numbers look the same in a table. So before a run's judged metrics are
read, the judge answers a fixed labelled set (``eval/calibration/judge_calibration.jsonl``, see its README) through
the very prompts, output schemas and budget the metrics use:

| metric | items | the judge is right when |
| --- | --- | --- |
| faithfulness | (passage, statement), supported or contradicted | its NLI verdict matches the label |
| context_precision | (question, reference, passage), relevant or not | its "useful" verdict matches the label |
| context_recall | (question, passage, reference statement), present or absent | its attribution matches the label |
| answer_relevancy | (question, on-topic answer, off-topic answer) | the on-topic answer scores strictly higher |

Labels are balanced (half positive), so chance is 0.5 for every metric, and a judge that always says "yes" scores
exactly 0.5. Agreement comes with a 95 % Wilson interval; the metric's judge is **unreliable** when that interval's
lower bound is not above chance. An item the judge cannot answer (unparsable output, an error) counts as a
disagreement. The result is cached per judge model + endpoint + prompt version + calibration set (one JSON file
per metric under ``<cache_dir>/judge-checks``), so it costs a run once per judge.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from eval.budget import PromptTooLongError
from eval.judge import JudgeError
from eval.metrics.judged import JudgedMetrics, settle
from eval.records import JudgeCheck, MetricAgreement
from eval.settings import JUDGED_METRICS
from eval.stats import proportion_ci
from ragswap import write_atomic

logger = logging.getLogger(__name__)

CALIBRATION_SET = Path(__file__).resolve().parent / "calibration" / "judge_calibration.jsonl"
"""The built-in labelled set (written for ragswap; see the README beside it)."""
PROTOCOL_VERSION = "1"
"""Bumped when how items are asked or scored changes (part of every cache key)."""
CHANCE = 0.5
TASKS = {
    "faithfulness": "supported vs contradicted statements",
    "context_precision": "relevant vs irrelevant passages",
    "context_recall": "reference statements present vs absent",
    "answer_relevancy": "on-topic above off-topic answer (pairs)",
}
_FIELDS = {
    "faithfulness": ("context", "statement", "label"),
    "context_precision": ("question", "reference", "context", "label"),
    "context_recall": ("question", "context", "statement", "label"),
    "answer_relevancy": ("question", "on_topic", "off_topic"),
}


class CalibrationItem(BaseModel):
    """One labelled item; which fields it needs depends on ``metric`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    metric: str
    question: str | None = None
    reference: str | None = None
    context: str | None = None
    statement: str | None = None
    on_topic: str | None = None
    off_topic: str | None = None
    label: int | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _complete(self) -> CalibrationItem:
        if self.metric not in _FIELDS:
            raise ValueError(f"metric must be one of {sorted(_FIELDS)}")
        missing = [name for name in _FIELDS[self.metric] if getattr(self, name) in (None, "")]
        if missing:
            raise ValueError(f"{self.metric} items need {missing}")
        return self


def load_calibration_set(path: Path = CALIBRATION_SET) -> list[CalibrationItem]:
    """Read and validate a calibration set (JSONL); errors name the line."""
    items: list[CalibrationItem] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(CalibrationItem.model_validate_json(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"{path}:{number}: {first.get('msg')}") from exc
    for metric in JUDGED_METRICS:
        labels = [i.label for i in items if i.metric == metric and i.label is not None]
        if labels and sum(labels) * 2 != len(labels):
            raise ValueError(f"{path}: {metric} items must be balanced (half label 1) so that chance is 0.5")
    return items


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


async def _agrees(judged: JudgedMetrics, item: CalibrationItem) -> bool:
    """Ask the judge about one item through the metric's own prompts; raise on a judge failure."""
    if item.metric == "faithfulness":
        assert item.statement and item.context
        (verdict,) = await judged.verdicts([item.statement], [item.context])
        return verdict == item.label
    if item.metric == "context_precision":
        assert item.question and item.reference and item.context
        return await judged.context_verdict(item.question, item.reference, item.context) == item.label
    if item.metric == "context_recall":
        assert item.question and item.statement and item.context
        (attributed,) = await judged.attributions(
            item.question, item.statement, [item.context], statements=[item.statement]
        )
        return attributed == item.label
    assert item.question and item.on_topic and item.off_topic
    on, off = await settle(
        judged.relevancy(item.question, item.on_topic), judged.relevancy(item.question, item.off_topic)
    )
    return on > off


async def _answer(judged: JudgedMetrics, item: CalibrationItem) -> dict[str, Any]:
    try:
        return {"id": item.id, "agree": await _agrees(judged, item), "error": None}
    except (JudgeError, PromptTooLongError) as exc:
        return {"id": item.id, "agree": False, "error": str(exc)}
    except (
        Exception
    ) as exc:  # ragas raises ValueError/TypeError on odd judge output: a disagreement, not a crash
        return {"id": item.id, "agree": False, "error": f"{type(exc).__name__}: {exc}"}


def agreement(metric: str, answers: Sequence[dict[str, Any]]) -> MetricAgreement:
    """Agreement with its 95 % Wilson interval; reliable only when the interval's lower bound beats chance."""
    n = len(answers)
    agree = sum(1 for a in answers if a["agree"])
    result = MetricAgreement(
        metric=metric,
        task=TASKS[metric],
        n=n,
        n_agree=agree,
        n_failed=sum(1 for a in answers if a["error"]),
        chance=CHANCE,
    )
    if n:
        result.agreement = agree / n
        result.ci_low, result.ci_high = proportion_ci(agree, n)
        result.reliable = result.ci_low > CHANCE
    return result


def _load(path: Path) -> MetricAgreement | None:
    if not path.is_file():
        return None
    try:
        return MetricAgreement.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError:
        logger.warning("ignoring an unreadable judge check", extra={"path": str(path)})
        return None


def _store(path: Path, result: MetricAgreement, answers: list[dict[str, Any]]) -> None:
    """The metric's result (atomically) and, beside it, every item's answer for a human to inspect."""
    write_atomic(path, result.model_dump_json(indent=2))
    write_atomic(path.with_suffix(".items.json"), json.dumps(answers, indent=1))


def check_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


async def run_judge_check(
    judged: JudgedMetrics,
    metrics: Sequence[str],
    *,
    url: str,
    cache_dir: Path | None,
    calibration: Path = CALIBRATION_SET,
    refresh: bool = False,
) -> JudgeCheck:
    """Agreement of ``judged.judge`` on every requested judged metric's calibration items (cached per metric).

    Args:
        judged: the metric objects of the run's judge (same prompts, examples, schema bounds and budget).
        metrics: the judged metrics to check (others are ignored).
        url: the judge's endpoint (part of the cache key).
        cache_dir: where results are cached; ``None`` = never cached.
        calibration: a labelled set (the built-in one by default).
        refresh: ask the judge again even when a cached result exists.
    """
    start = time.perf_counter()
    judge = judged.judge
    budget = await judge.prepare()
    items = await asyncio.to_thread(load_calibration_set, calibration)
    set_sha = await asyncio.to_thread(file_sha, calibration)
    key_parts = {
        "protocol": PROTOCOL_VERSION,
        "model": judge.model,
        "url": url,
        "set": set_sha,
        "prompts": judged.prompt_fingerprint(),
        "structured": judge.structured_output,
        "max_tokens": judge.max_tokens,
        "temperature": judge.temperature,
        "bounds": [judge.max_items, judge.max_chars],
        "window": budget.window.tokens,
        "strictness": judged.strictness,
    }
    version = check_key({k: v for k, v in key_parts.items() if k not in ("model", "url", "set")})
    results: dict[str, MetricAgreement] = {}
    cached_all = True
    folder = cache_dir / "judge-checks" if cache_dir is not None else None
    for metric in [m for m in JUDGED_METRICS if m in metrics]:
        path = folder / f"{check_key({**key_parts, 'metric': metric})}.json" if folder else None
        cached = await asyncio.to_thread(_load, path) if path is not None and not refresh else None
        if cached is not None:
            results[metric] = cached
            continue
        cached_all = False
        if metric == "answer_relevancy" and judged.embeddings is None:
            continue
        mine = [item for item in items if item.metric == metric]
        answers = list(await asyncio.gather(*(_answer(judged, item) for item in mine)))
        results[metric] = agreement(metric, answers)
        if path is not None:
            await asyncio.to_thread(_store, path, results[metric], answers)
    check = JudgeCheck(
        model=judge.model,
        url=url,
        prompt_version=version,
        calibration_set=calibration.name if calibration == CALIBRATION_SET else str(calibration),
        calibration_sha=set_sha,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - start, 2),
        cached=cached_all,
        metrics=results,
    )
    logger.info(
        "judge check",
        extra={
            "model": judge.model,
            "cached": cached_all,
            "unreliable": check.unreliable(),
            "seconds": check.seconds,
        },
    )
    return check
