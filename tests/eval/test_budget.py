"""Judge prompts that fit the judge: token counts, the window's source, splitting passages, combining verdicts.

The passages are the long-passage fixture (20 encyclopedic passages of 300+ words); the tokenizer is the real
SmolLM2 one from the model store. The judge is the stand-in judge of ``conftest.py`` (a real HTTP server that
says "yes" to everything): what is under test here is what ragswap sends, not what a model answers (that is
``test_long_passages.py``, on the real engine).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from eval.budget import (
    CharEstimateCounter,
    ContextWindow,
    LocalTokenizerCounter,
    PromptBudget,
    PromptTooLongError,
    pack,
    resolve_window,
    split_to_fit,
)
from eval.scoring import JudgeConfig, build_scorer
from eval.settings import JUDGED_METRICS
from tests.eval.long_passage_rows import ROWS, long_sample
from tests.eval.standin_judge import StandInJudge


@pytest.fixture(scope="module")
def tokenizer(base_model_path: Path) -> LocalTokenizerCounter:
    return LocalTokenizerCounter(base_model_path)


def test_fixture_is_long_and_varied() -> None:
    assert len(ROWS) == 20 and len({r["id"] for r in ROWS}) == 20
    for row in ROWS:
        assert len(row["passage"].split()) >= 300, row["id"]
        assert row["question"].endswith("?") and row["reference"]


def test_window_comes_from_the_setting_or_the_endpoint() -> None:
    assert resolve_window(None, 8192) == ContextWindow(8192, "/v1/models")
    assert resolve_window(2048, 8192) == ContextWindow(2048, "setting < /v1/models")
    assert resolve_window(16384, 8192) == ContextWindow(8192, "/v1/models")  # the setting only ever bounds
    assert resolve_window(4096, None) == ContextWindow(4096, "setting")
    assert resolve_window(None, None) == ContextWindow(2048, "default")


def test_estimate_is_conservative_on_real_prompts(tokenizer: LocalTokenizerCounter) -> None:
    from ragas.metrics.collections.context_recall.util import ContextRecallInput, ContextRecallPrompt
    from ragas.metrics.collections.faithfulness.util import NLIStatementInput, NLIStatementPrompt

    estimate = CharEstimateCounter()
    recall, nli = ContextRecallPrompt(), NLIStatementPrompt()
    for i, row in enumerate(ROWS):
        contexts = "\n".join(ROWS[(i + k) % len(ROWS)]["passage"] for k in range(4))
        prompts = [
            recall.to_string(
                ContextRecallInput(question=row["question"], context=contexts, answer=row["reference"])
            ),
            nli.to_string(NLIStatementInput(context=row["passage"], statements=[row["reference"]] * 3)),
        ]
        for prompt in prompts:
            exact = tokenizer.count(prompt)
            assert exact < estimate.count(prompt) < 2.5 * exact
    # The exact counter is the chat-templated prompt, as vLLM tokenizes it.
    assert tokenizer.count("hello") == len(
        tokenizer._tokenizer.apply_chat_template(
            [{"role": "user", "content": "hello"}], add_generation_prompt=True, tokenize=True
        )["input_ids"]
    )


def test_pack_keeps_order_and_splits_only_what_is_too_long(tokenizer: LocalTokenizerCounter) -> None:
    budget = PromptBudget(ContextWindow(1400, "setting"), max_output_tokens=256, counter=tokenizer)
    passages = [r["passage"] for r in ROWS[:5]]

    def fits(batch: list[str]) -> bool:
        return budget.fits("Judge these passages:\n" + "\n".join(batch))

    batches = pack(passages, fits)
    assert [p for batch in batches for p in batch] == passages  # nothing lost, nothing reordered
    assert all(fits(batch) for batch in batches) and 2 <= len(batches) < len(passages)
    # A passage too long on its own is cut at sentence borders into pieces that each fit.
    small = PromptBudget(ContextWindow(400, "setting"), max_output_tokens=128, counter=tokenizer)
    pieces = split_to_fit(passages[0], lambda text: small.fits(text))
    assert len(pieces) > 1 and all(small.fits(p) for p in pieces)
    assert " ".join(pieces).split() == passages[0].split()
    assert all(p.endswith((".", "!", "?", ";")) for p in pieces[:-1])
    with pytest.raises(PromptTooLongError):
        split_to_fit("one two three", lambda text: False)


def test_long_passages_are_split_to_fit_and_combined(
    stand_in_judge: Callable[..., StandInJudge],
    tokenizer: LocalTokenizerCounter,
    base_model_path: Path,
    embedding_model_path: Path,
) -> None:
    # A judge reporting a 2048-token window, max_tokens=512: four 420-token passages do not fit one prompt.
    judge = stand_in_judge("always-yes", max_model_len=2048)
    config = JudgeConfig(
        url=judge.url,
        model="stand-in-judge",
        cache_dir=None,
        tokenizer_dir=base_model_path,
        few_shot=["answer_relevancy", "context_recall"],
    )
    scorer = build_scorer(list(JUDGED_METRICS), config, embedding_model_path)
    samples = [long_sample(i) for i in range(3)]

    async def run() -> list[dict[str, object]]:
        return list(await asyncio.gather(*(scorer.score(s, t) for s, t in samples)))

    results = asyncio.run(run())
    assert scorer.judge is not None and scorer.judge.budget is not None
    limit = scorer.judge.budget.prompt_limit
    assert scorer.judge.budget.window == ContextWindow(2048, "/v1/models") and limit == 2048 - 512 - 8
    assert (
        scorer.judge.budget.counter.description == "tokenizer of SmolLM2-135M-Instruct"
    )  # exact, not estimated
    # Every prompt sent fits, counted again here with the judge's tokenizer.
    sent = [body["messages"][0]["content"] for body in judge.bodies]
    assert sent and max(tokenizer.count(p) for p in sent) <= limit
    for scores in results:
        for name, score in scores.items():
            assert score.status == "ok", (name, score.reason)  # type: ignore[attr-defined]
        recall = scores["context_recall"]
        notes = [c.note or "" for c in recall.judge_calls]  # type: ignore[attr-defined]
        # Planned across calls, few-shot examples dropped first (they do not fit next to the passages). The
        # yes-judge attributes every statement in batch 1, so the later batches have nothing left to classify.
        # Exact counts: two 440-token passages beside the ~440-token instruction fit 1528 tokens, three do not.
        assert notes[0] == "batch 1 of 2, 0 examples", notes
        assert len(notes) == 1
        faithfulness = scores["faithfulness"]
        nli = [c for c in faithfulness.judge_calls if c.schema_name == "NLIStatementOutput"]  # type: ignore[attr-defined]
        assert len(nli) >= 2  # the joined passages did not fit one verdict call
        # A yes-judge supports every statement in every batch: combined per ragas's definitions, all score 1.
        assert faithfulness.value == 1.0 and recall.value == 1.0  # type: ignore[attr-defined]
        assert scores["context_precision"].value == pytest.approx(1.0)  # type: ignore[attr-defined]
        # Each verdict call asked for exactly one verdict per statement.
    nli_bodies = [
        b for b in judge.bodies if b["response_format"]["json_schema"]["name"] == "NLIStatementOutput"
    ]
    for body in nli_bodies:
        schema = body["response_format"]["json_schema"]["schema"]["properties"]["statements"]
        assert schema["minItems"] == schema["maxItems"] >= 1

    # The same samples with the window the endpoint reports as 8192: one call per step, examples kept.
    wide = stand_in_judge("always-yes", max_model_len=8192)
    config.url = wide.url
    scorer = build_scorer(list(JUDGED_METRICS), config, embedding_model_path)
    sample, trace = samples[0]
    scores = asyncio.run(scorer.score(sample, trace))
    recall_calls = scores["context_recall"].judge_calls
    assert len(recall_calls) == 1 and recall_calls[0].note == "3 examples"
    assert all(s.status == "ok" for s in scores.values())


def test_context_recall_rechecks_only_unattributed_statements(
    stand_in_judge: Callable[..., StandInJudge], base_model_path: Path
) -> None:
    # A judge answering at random (seeded by the prompt) over a 2048-token window: the first batch extracts and
    # classifies the reference's statements; the later batches classify exactly the unattributed ones.
    judge = stand_in_judge("random", max_model_len=2048)
    config = JudgeConfig(url=judge.url, model="stand-in-judge", cache_dir=None, tokenizer_dir=base_model_path)
    scorer = build_scorer(["context_recall"], config, None)
    checked = 0
    for i in range(len(ROWS)):
        sample, trace = long_sample(i)
        start = len(judge.bodies)
        (score,) = asyncio.run(scorer.score(sample, trace)).values()
        assert score.status == "ok", score.reason
        bodies = judge.bodies[start:]
        first = json.loads(judge.content(bodies[0]))["classifications"]
        pending_index = [j for j, c in enumerate(first) if c["attributed"] == 0]
        pending = [first[j]["statement"] for j in pending_index]
        later = bodies[1:]
        if not pending:
            assert later == [] and score.value == 1.0
            continue
        checked += 1
        assert later, "unattributed statements must be checked against the other passages"
        attributed = {j for j, c in enumerate(first) if c["attributed"] == 1}
        for body in later:
            schema = body["response_format"]["json_schema"]["schema"]["properties"]["classifications"]
            assert schema["minItems"] == schema["maxItems"] == len(pending)
            assert all(statement in body["messages"][0]["content"] for statement in pending)
            verdicts = json.loads(judge.content(body))["classifications"]
            attributed |= {j for j, v in zip(pending_index, verdicts, strict=True) if v["attributed"]}
        assert score.value == pytest.approx(len(attributed) / len(first))
    assert checked >= 3
