"""The four RAGAS metrics judged by the real SmolLM2-135M-Instruct on the session's vLLM engine.

A 135M judge is weak: these samples are chosen to be clear-cut, and every value is also checked against the
ragas formula applied to the judge's own raw output (kept in the trace), so a score can be verified by hand.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from eval.embeddings import LocalEmbeddings
from eval.records import EvalSample, MetricScore, RetrievedChunk, SampleTrace
from eval.scoring import JudgeConfig, build_scorer
from tests.conftest import BASE_MODEL

pytestmark = pytest.mark.engine

QUESTION = "What is the capital of France?"
CONTEXT = "Paris is the capital and largest city of France."
FAITHFUL = "The capital of France is Paris."
UNFAITHFUL = "Bananas are blue and grow on the Moon."
OFF_TOPIC = "The capital of France is Berlin. Berlin has 90 million inhabitants."


def _raw(score: MetricScore, index: int = -1) -> dict[str, Any]:
    raw = score.judge_calls[index].raw
    assert raw is not None
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


@pytest.fixture(scope="module")
def scores(
    engine: Any, embedding_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    judge = JudgeConfig(
        url=f"{engine.url}/v1",
        model=BASE_MODEL,
        max_tokens=192,
        max_items=3,
        max_chars=100,
        cache_dir=tmp_path_factory.mktemp("judge-cache"),
    )
    scorer = build_scorer(
        ["faithfulness", "answer_relevancy", "context_precision", "context_recall"],
        judge,
        embedding_model_path,
    )
    sample = EvalSample(id="1", question=QUESTION, reference="Paris is the capital of France.")

    def trace(answer: str) -> SampleTrace:
        return SampleTrace(
            sample_id="1",
            config="c",
            question=QUESTION,
            answer=answer,
            retrieved=[RetrievedChunk(id="d1", text=CONTEXT)],
        )

    async def run() -> list[dict[str, MetricScore]]:
        return list(
            await asyncio.gather(*(scorer.score(sample, trace(a)) for a in (FAITHFUL, UNFAITHFUL, OFF_TOPIC)))
        )

    faithful, unfaithful, off_topic = asyncio.run(run())
    assert scorer.judge is not None
    return {"faithful": faithful, "unfaithful": unfaithful, "off_topic": off_topic, "judge": scorer.judge}


def test_faithfulness_is_the_share_of_supported_statements(scores: dict[str, Any]) -> None:
    """The ragas formula over the judge's own output. Which answer scores higher is not asserted: the 135M judge
    copies statements from the question and gives near-random NLI verdicts (here 1/3 for the faithful answer and
    2/3 for the unfaithful one), which is what ``ragswap eval judge-check`` exists to flag (tests/eval/
    test_calibration.py: a judge no better than chance marks every judged metric unreliable)."""
    faithful, unfaithful = scores["faithful"]["faithfulness"], scores["unfaithful"]["faithfulness"]
    assert faithful.status == "ok" and unfaithful.status == "ok", (faithful.reason, unfaithful.reason)
    assert faithful.value is not None and unfaithful.value is not None
    for score in (faithful, unfaithful):
        # Two judge steps (statements, then NLI verdicts); the score is the share of verdicts equal to 1.
        assert [c.schema_name for c in score.judge_calls] == [
            "StatementGeneratorOutput",
            "NLIStatementOutput",
        ]
        verdicts = [s["verdict"] for s in _raw(score)["statements"]]
        assert set(verdicts) <= {0, 1} and 1 <= len(verdicts) <= 3
        # One verdict per distinct statement: a statement the judge repeated is judged (and weighed) once.
        extracted = {" ".join(s.lower().split()).rstrip(".") for s in _raw(score, 0)["statements"]}
        assert len(verdicts) == len(extracted)
        assert score.value == pytest.approx(sum(verdicts) / len(verdicts))


def test_answer_relevancy_prefers_the_on_topic_answer(
    scores: dict[str, Any], embedding_model_path: Path
) -> None:
    on, off = scores["faithful"]["answer_relevancy"], scores["off_topic"]["answer_relevancy"]
    assert on.status == "ok" and off.status == "ok"
    assert on.value is not None and off.value is not None
    assert on.value > off.value
    # Recompute: cosine(question, the judge's generated question) with the same MiniLM, 0 if noncommittal.
    embeddings = LocalEmbeddings(embedding_model_path)
    for score in (on, off):
        raw = _raw(score)
        expected = 0.0 if raw["noncommittal"] else embeddings.similarity(QUESTION, raw["question"])
        assert score.value == pytest.approx(expected, abs=1e-4)


def test_context_precision_and_recall_follow_the_judges_verdicts(scores: dict[str, Any]) -> None:
    precision = scores["faithful"]["context_precision"]
    recall = scores["faithful"]["context_recall"]
    assert precision.status == "ok" and recall.status == "ok", (precision.reason, recall.reason)
    # One context: average precision is 1 if the judge said it was useful, else 0.
    assert precision.value == pytest.approx(float(_raw(precision)["verdict"]), abs=1e-6)
    attributed = [c["attributed"] for c in _raw(recall)["classifications"]]
    assert set(attributed) <= {0, 1} and 1 <= len(attributed) <= 3
    assert recall.value == pytest.approx(sum(attributed) / len(attributed))
    # Whether the judge attributes the reference's statement (it sits verbatim in the context) is not asserted:
    # the 135M judge's verdict flipped from 1 to 0 between bf16 and float32 engines with compact JSON (stop 22),
    # the near-random judging that `ragswap eval judge-check` exists to flag (see the faithfulness test above).


def test_structured_output_kept_every_judge_call_valid(scores: dict[str, Any]) -> None:
    judge = scores["judge"]
    assert judge.calls >= 12 and judge.failures == 0
    for case in ("faithful", "unfaithful", "off_topic"):
        for score in scores[case].values():
            assert all(call.ok for call in score.judge_calls)
