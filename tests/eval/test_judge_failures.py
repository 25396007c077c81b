"""A misbehaving judge: failures are counted with reasons, never crashes, zeros or NaN; 4xx are sent once.

The judges here are the stand-in judge of ``conftest.py`` (a real HTTP server answering like a broken judge).
Everything else is real: the openai client, ragas's prompt and output classes, the runner, summary and report.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eval.records import EvalSample, JudgeInfo, RetrievedChunk, RunConfig, SampleTrace
from eval.runner import RunSpec, execute_run, read_summary, read_traces
from eval.scoring import JudgeConfig, build_scorer
from tests.eval.standin_judge import BROKEN, StandInJudge


@pytest.fixture
def broken_judge(stand_in_judge: Callable[..., StandInJudge]) -> Iterator[StandInJudge]:
    yield stand_in_judge("broken-json")


SAMPLES = [
    EvalSample(
        id=str(i),
        question="What is the capital of France?",
        reference="Paris is the capital of France.",
        response="The capital of France is Paris.",
        retrieved_contexts=["Paris is the capital of France.", "Lyon is a city in France."],
        retrieved_context_ids=["d1", "d2"],
        reference_context_ids=["d1"],
    )
    for i in range(3)
]
JUDGED = ["faithfulness", "context_precision", "context_recall"]


def test_broken_json_is_counted_as_failed_with_reason(broken_judge: StandInJudge, tmp_path: Path) -> None:
    judge = JudgeConfig(
        url=broken_judge.url, model="broken-judge", max_retries=1, cache_dir=tmp_path / "cache"
    )
    metrics = [*JUDGED, "mrr", "id_context_precision"]
    scorer = build_scorer(metrics, judge, None)
    spec = RunSpec(
        run_id="broken",
        dataset="inline",
        samples=SAMPLES,
        configs=[RunConfig(name="given", model="-")],
        metrics=metrics,
        judge=JudgeInfo(url=judge.url, model=judge.model),
    )
    summary = asyncio.run(execute_run(spec, tmp_path / "run", scorer, None))

    for name in JUDGED:
        result = summary.results["given"][name]
        assert result.mean is None and result.ci_low is None  # not 0, not NaN
        assert (result.n_ok, result.n_failed) == (0, 3)
        (reason,) = result.failure_reasons
        assert reason.startswith("judge output is not a valid")
    # Metrics that need no judge still score.
    assert summary.results["given"]["mrr"].mean == 1.0
    assert summary.results["given"]["id_context_precision"].mean == 0.5

    traces = read_traces(tmp_path / "run")
    assert len(traces) == 3
    for trace in traces:
        score = trace.scores["faithfulness"]
        assert score.status == "failed" and score.value is None
        assert "Invalid JSON" in (score.reason or "")
        (call,) = score.judge_calls
        assert call.raw == BROKEN and call.attempts == 2 and not call.ok
        assert score.failure_kind == "parse" and call.error_kind == "parse"
    # Context precision asks once per context; every call was tried twice (one retry).
    assert summary.judge_failures == summary.judge_calls > 0
    assert len(broken_judge.bodies) == 2 * summary.judge_calls
    # Structured output on: each request carried the metric's JSON schema, bounded. Metrics run concurrently, so
    # the order of the requests is not fixed: look the statement-extraction schema up rather than take the first.
    formats = [body["response_format"] for body in broken_judge.bodies]
    assert all(fmt["type"] == "json_schema" for fmt in formats)
    statement_schemas = [
        props["statements"]
        for fmt in formats
        if "statements" in (props := fmt["json_schema"]["schema"].get("properties", {}))
    ]
    assert statement_schemas and all(schema["maxItems"] > 0 for schema in statement_schemas)
    # First attempts are greedy, retries sample a little.
    temperatures = sorted(body["temperature"] for body in broken_judge.bodies)
    assert temperatures.count(0.0) == summary.judge_calls and temperatures[-1] > 0
    # ... and penalise repetition (a small judge under guided decoding can loop on whitespace to max_tokens).
    assert all(("frequency_penalty" in body) == (body["temperature"] > 0) for body in broken_judge.bodies)

    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["results"]["given"]["faithfulness"]["n_failed"] == 3
    assert not any(isinstance(v, float) and math.isnan(v) for v in _floats(on_disk))
    html = (tmp_path / "run" / "report.html").read_text()
    assert "judge output is not a valid" in html and "failed=3" in html
    # No /v1/models on this judge: the window is the conservative default, and the summary says so.
    assert on_disk["judge"]["context_tokens"] == 2048 and on_disk["judge"]["context_source"] == "default"
    assert read_summary(tmp_path / "run").judge_failures == summary.judge_failures
    # Nothing parsed, so nothing was cached: a rerun asks again rather than replaying a failure.
    assert not list((tmp_path / "cache").glob("**/*.val"))


def test_unreachable_judge_fails_with_reason(tmp_path: Path) -> None:
    from tests.conftest import free_port

    judge = JudgeConfig(url=f"http://127.0.0.1:{free_port()}/v1", model="m", max_retries=0, cache_dir=None)
    scorer = build_scorer(["context_recall"], judge, None)
    (score,) = asyncio.run(scorer.score(SAMPLES[0], _trace())).values()
    assert score.status == "failed" and score.value is None and score.failure_kind == "request"
    assert (score.reason or "").startswith("judge request failed: APIConnectionError")


def _trace(contexts: list[str] | None = None) -> SampleTrace:
    texts = contexts or ["Paris is the capital of France."]
    return SampleTrace(
        sample_id="0",
        config="c",
        question="What is the capital of France?",
        answer="The capital of France is Paris.",
        retrieved=[RetrievedChunk(id=f"d{i}", text=t) for i, t in enumerate(texts)],
    )


OVERFLOW = (
    "This model's maximum context length is 2048 tokens. However, your prompt contains at least 2049 input "
    "tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt."
)


def test_deterministic_4xx_is_sent_once(stand_in_judge: Callable[..., StandInJudge]) -> None:
    judge = stand_in_judge("status", status=400, message=OVERFLOW)
    config = JudgeConfig(url=judge.url, model="stand-in-judge", max_retries=2, cache_dir=None)
    scorer = build_scorer(["context_recall", "context_precision"], config, None)
    scores = asyncio.run(scorer.score(SAMPLES[0], _trace()))
    for score in scores.values():
        assert score.status == "failed" and score.failure_kind == "context"
        assert (score.reason or "").startswith("judge prompt longer than the judge's window: HTTP 400")
        assert all(call.attempts == 1 for call in score.judge_calls)
    # One request per judge call, although two retries were allowed: the same request gets the same 400.
    assert scorer.judge is not None and len(judge.bodies) == scorer.judge.calls == 2
    assert scorer.judge.rejected == 2 and scorer.judge.context_failures == 2

    other = stand_in_judge("status", status=422, message="response_format is not supported")
    config = JudgeConfig(url=other.url, model="stand-in-judge", max_retries=2, cache_dir=None)
    (score,) = asyncio.run(
        build_scorer(["context_recall"], config, None).score(SAMPLES[0], _trace())
    ).values()
    assert score.failure_kind == "rejected" and "HTTP 422: response_format is not supported" in (
        score.reason or ""
    )
    assert len(other.bodies) == 1


def test_transient_errors_are_retried(stand_in_judge: Callable[..., StandInJudge]) -> None:
    for status in (429, 503):
        judge = stand_in_judge("status", status=status, message="busy")
        config = JudgeConfig(url=judge.url, model="stand-in-judge", max_retries=2, cache_dir=None)
        (score,) = asyncio.run(
            build_scorer(["context_recall"], config, None).score(SAMPLES[0], _trace())
        ).values()
        assert score.status == "failed" and score.failure_kind == "request"
        assert score.judge_calls[0].attempts == 3 and len(judge.bodies) == 3


def test_an_answer_cut_off_at_max_tokens_is_retried_with_the_room_the_window_has_left(
    stand_in_judge: Callable[..., StandInJudge],
) -> None:
    # The answer needs 300 output tokens, max_tokens is 128, the prompt (as the endpoint counts it) 1000 of a
    # 4096-token window: the retry asks for 4 x 128 = 512 (the cap; the window would leave 3088) and scores.
    judge = stand_in_judge("long-answer", max_model_len=4096, answer_tokens=300, prompt_tokens=1000)
    config = JudgeConfig(url=judge.url, model="stand-in-judge", max_tokens=128, max_retries=2, cache_dir=None)
    (score,) = asyncio.run(
        build_scorer(["context_recall"], config, None).score(SAMPLES[0], _trace())
    ).values()
    assert score.status == "ok", score.reason
    (call,) = score.judge_calls
    assert (call.attempts, call.max_tokens) == (2, 512)
    assert [body["max_tokens"] for body in judge.bodies] == [128, 512]

    # The window leaves no more room than max_tokens: every attempt is cut off the same way, and the reason says
    # where (the limit never shrinks below max_tokens; the budget reserved it).
    tight = stand_in_judge("long-answer", max_model_len=2048, answer_tokens=900, prompt_tokens=1912)
    config = JudgeConfig(url=tight.url, model="stand-in-judge", max_tokens=128, max_retries=2, cache_dir=None)
    (score,) = asyncio.run(
        build_scorer(["context_recall"], config, None).score(SAMPLES[0], _trace())
    ).values()
    assert score.status == "failed" and score.failure_kind == "parse"
    assert "cut off at max_tokens=128" in (score.reason or "")
    assert [body["max_tokens"] for body in tight.bodies] == [128, 128, 128]


def test_prompt_that_cannot_fit_is_never_sent(stand_in_judge: Callable[..., StandInJudge]) -> None:
    # The endpoint reports a 512-token window; max_tokens=256 leaves ~250 prompt tokens, less than ragas's
    # context-recall instruction and schema alone: the metric fails with the reason before any request.
    judge = stand_in_judge("always-yes", max_model_len=512)
    config = JudgeConfig(url=judge.url, model="stand-in-judge", max_tokens=256, cache_dir=None)
    scorer = build_scorer(["context_recall"], config, None)
    (score,) = asyncio.run(scorer.score(SAMPLES[0], _trace())).values()
    assert score.status == "failed" and score.failure_kind == "context", score.reason
    assert "judge prompt too long" in (score.reason or "") and "window of 512 tokens (/v1/models)" in (
        score.reason or ""
    )
    assert judge.bodies == []


def _floats(node: Any) -> Iterator[float]:
    if isinstance(node, float):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _floats(value)
    elif isinstance(node, list):
        for value in node:
            yield from _floats(value)
