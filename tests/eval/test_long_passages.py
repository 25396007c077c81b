"""Judged metrics on long real passages with the real SmolLM2-135M judge, at a 2048- and an 8192-token window.

The fixture (``tests/fixtures/eval/long_passages.jsonl``, see its README) has 20 question/reference/passage rows,
every passage 300+ words (~420-470 SmolLM2 tokens). Each sample is scored against four retrieved passages (its
own and three others), the situation of issue 15 where ragas's context-recall prompt outgrew a 2048-token judge
on every sample.

The judge is a vLLM engine started here with ragswap's **default** engine settings (bf16, ``max_model_len`` 8192,
LoRA on, 1 GiB KV cache): that it starts and serves an ~8k-token prompt is part of what is tested, and bf16
prefills these long prompts ~2.5x faster than the session engine's float32. The 2048 run tells the judge its
window is 2048 (``eval.judge_context_tokens``) and checks, with the engine's own token counts, that every prompt
sent fitted 2048 tokens with room for the output.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from eval.budget import ContextWindow, PromptBudget, make_counter
from eval.judge import JudgeError, JudgeLLM
from eval.records import MetricScore
from eval.scoring import JudgeConfig, build_scorer
from serving.engine import EngineSettings
from tests.conftest import BASE_MODEL, free_port, running_engine
from tests.eval.long_passage_rows import ROWS, long_sample

# The module's fixture scores 20 long rows twice (2048 and 8192 windows) with the real 135M judge: ~10 min on an
# idle 2-core machine, over the suite's 1,200 s per-test hang guard on a slower one (seen: a timeout in setup).
pytestmark = [pytest.mark.engine, pytest.mark.timeout(3600)]

MAX_TOKENS = 512
"""The judge's default output limit (``eval.judge_max_tokens``)."""
# Both windows see every row. To keep the test's time, each row is scored at each window on one of the two
# metrics whose prompts hold all four passages (they overflowed in issue 15), alternating so that every row gets
# both across the two windows; precision (one passage per call) and relevancy (none) on a subset of the rows.
METRICS = {
    window: {
        i: [("context_recall", "faithfulness")[(i + (window == 8192)) % 2]]
        + (["context_precision"] if i < 4 else [])
        + (["answer_relevancy"] if i < 10 else [])
        for i in range(20)
    }
    for window in (2048, 8192)
}


@pytest.fixture(scope="module")
def judge_engine(base_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A vLLM engine with ragswap's default engine settings (see the module docstring)."""
    settings = EngineSettings(port=free_port(), startup_timeout_s=900)
    assert (settings.dtype, settings.max_model_len, settings.enable_lora) == ("auto", 8192, True)
    with running_engine(settings, base_model_path, tmp_path_factory.mktemp("judge-engine")) as proc:
        yield proc


async def _score_all(
    config: JudgeConfig, embeddings: Path, plan: dict[int, list[str]]
) -> tuple[list[Any], list[dict[str, MetricScore]]]:
    """Each row with its metrics (one scorer per metric set, all on the same judge endpoint and cache)."""
    scorers = {
        metrics: build_scorer(list(metrics), config, embeddings)
        for metrics in {tuple(m) for m in plan.values()}
    }
    samples = [long_sample(i) for i in range(len(ROWS))]
    results = await asyncio.gather(*(scorers[tuple(plan[i])].score(s, t) for i, (s, t) in enumerate(samples)))
    for scorer in scorers.values():
        scorer.close()
    return [s.judge for s in scorers.values()], list(results)


@pytest.fixture(scope="module")
def scored(
    judge_engine: Any,
    base_model_path: Path,
    embedding_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[int, tuple[list[Any], list[dict[str, MetricScore]]]]:
    cache = tmp_path_factory.mktemp("long-judge-cache")
    out = {}
    for window in (2048, 8192):  # 2048 first: none of its calls can come from the cache
        config = JudgeConfig(
            url=f"{judge_engine.url}/v1",
            model=BASE_MODEL,
            max_tokens=MAX_TOKENS,
            max_items=3,
            max_chars=100,
            concurrency=32,
            timeout_s=900,
            context_tokens=window,
            tokenizer_dir=base_model_path,
            cache_dir=cache,
        )
        out[window] = asyncio.run(_score_all(config, embedding_model_path, METRICS[window]))
    return out


@pytest.mark.parametrize("window", [2048, 8192])
def test_every_judged_metric_scores_every_sample(
    scored: dict[int, tuple[list[Any], list[dict[str, MetricScore]]]], window: int
) -> None:
    judges, results = scored[window]
    assert all(judge.budget.window.tokens == window for judge in judges)
    failed = [(i, name, s) for i, r in enumerate(results) for name, s in r.items() if s.status != "ok"]
    # 0 context-overflow failures: no prompt too long, nothing refused for length, no 4xx.
    assert [(i, name, s.reason) for i, name, s in failed if s.failure_kind == "context"] == []
    assert all(judge.context_failures == 0 and judge.rejected == 0 for judge in judges)
    # Nothing else fails either: every judged metric scores every sample. (Before ``engine.compact_json`` the
    # 135M judge pretty-printed its JSON and now and then ran past max_tokens; an answer cut off is now retried
    # with the room the window leaves, see test_judge_failures.py.)
    assert failed == [], [(i, name, s.reason) for i, name, s in failed]
    assert [sorted(r) for r in results] == [sorted(METRICS[window][i]) for i in range(20)]
    for result in results:
        for score in result.values():
            assert score.value is not None and 0.0 <= score.value <= 1.0


def test_2048_prompts_fit_by_the_engines_own_count(
    scored: dict[int, tuple[list[Any], list[dict[str, MetricScore]]]],
) -> None:
    judges, results = scored[2048]
    assert {judge.budget.prompt_limit for judge in judges} == {2048 - MAX_TOKENS - 8}
    calls = [c for r in results for s in r.values() for c in s.judge_calls]
    sent = [c for c in calls if not c.cached]
    assert len(sent) > 50
    for call in sent:
        # vLLM's usage.prompt_tokens is the ground truth; ragswap's count (the judge's tokenizer) matches it.
        assert call.usage_prompt_tokens is not None and call.usage_prompt_tokens + MAX_TOKENS <= 2048
        assert call.prompt_tokens == call.usage_prompt_tokens
    # Four passages do not fit one 2048-token prompt: recall and the faithfulness verdicts were split.
    for result in results:
        if "context_recall" in result:
            notes = [c.note or "" for c in result["context_recall"].judge_calls]
            assert notes[0].startswith("batch 1 of ") and "0 examples" in notes[0], notes
        if "faithfulness" in result:
            verdicts = [
                c for c in result["faithfulness"].judge_calls if c.schema_name == "NLIStatementOutput"
            ]
            assert len(verdicts) >= 2


def test_8192_keeps_one_call_and_the_examples(
    scored: dict[int, tuple[list[Any], list[dict[str, MetricScore]]]],
) -> None:
    judges, results = scored[8192]
    assert all(judge.budget.window == ContextWindow(8192, "setting") for judge in judges)  # = the engine's
    for result in results:
        if "context_recall" in result:
            (recall,) = result["context_recall"].judge_calls
            assert (
                recall.note == "3 examples"
                and recall.prompt_tokens is not None
                and recall.prompt_tokens > 2048
            )
        if "faithfulness" in result:
            verdicts = [
                c for c in result["faithfulness"].judge_calls if c.schema_name == "NLIStatementOutput"
            ]
            assert len(verdicts) == 1


def test_the_default_engine_serves_its_whole_window(judge_engine: Any, base_model_path: Path) -> None:
    import httpx2
    from openai import AsyncOpenAI
    from ragas.metrics.collections.context_recall.util import ContextRecallOutput

    (card,) = httpx2.get(f"{judge_engine.url}/v1/models", timeout=30).json()["data"]
    assert card["max_model_len"] == 8192  # engine.max_model_len's default: SmolLM2's full window
    requests: list[str] = []

    async def count(request: Any) -> None:
        requests.append(str(request.url))

    async def run() -> tuple[int | None, JudgeError]:
        http = httpx2.AsyncClient(event_hooks={"request": [count]}, timeout=300)
        client = AsyncOpenAI(base_url=f"{judge_engine.url}/v1", api_key="x", max_retries=0, http_client=http)
        try:
            # ~7,800 prompt tokens: served (the 1 GiB KV cache holds a whole 8192-token sequence).
            long = await client.chat.completions.create(
                model=BASE_MODEL,
                messages=[{"role": "user", "content": "\n".join(r["passage"] for r in ROWS[:19])}],
                max_tokens=4,
            )
            # A judge told a wrong, larger window sends what the engine must refuse (all 20 passages, 8,239 tokens).
            wrong = PromptBudget(ContextWindow(100_000, "setting"), 64, make_counter(base_model_path, 2.5))
            judge = JudgeLLM(client, BASE_MODEL, max_retries=2, max_tokens=64, budget=wrong)
            requests.clear()
            try:
                await judge.agenerate("\n".join(r["passage"] for r in ROWS), ContextRecallOutput)
            except JudgeError as exc:
                assert judge.rejected == 1 and judge.context_failures == 1
                return (long.usage.prompt_tokens if long.usage else None), exc
            raise AssertionError("the engine accepted a prompt longer than its window")
        finally:
            await client.close()

    served, error = asyncio.run(run())
    assert served is not None and 7500 < served < 8192
    assert error.kind == "context" and "HTTP 400" in str(error) and "maximum context length" in str(error)
    completions = [url for url in requests if url.endswith("/chat/completions")]
    assert len(completions) == 1  # a deterministic 4xx is attempted once: two retries allowed, none made
