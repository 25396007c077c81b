"""Datasets: ragswap rows, ragas EvaluationDataset rows, and errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.dataset import DatasetError, load_dataset, parse_rows


def test_ragswap_rows(tmp_path: Path) -> None:
    path = tmp_path / "rag.jsonl"
    rows = [
        {"question": "q1", "reference": "r1", "reference_context_ids": [1, "d2"]},
        {"id": "x", "question": "q2", "reference_contexts": ["c"]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    samples = load_dataset(path)
    assert [s.id for s in samples] == ["1", "x"]
    assert samples[0].reference_context_ids == ["1", "d2"]
    assert samples[1].reference_contexts == ["c"]


def test_ragas_evaluation_dataset_rows() -> None:
    from ragas import EvaluationDataset, SingleTurnSample

    dataset = EvaluationDataset(
        samples=[
            SingleTurnSample(
                user_input="q",
                response="a",
                retrieved_contexts=["c1", "c2"],
                reference="r",
                retrieved_context_ids=["1", "2"],
                reference_context_ids=["2"],
            )
        ]
    )
    lines = [json.dumps(row) for row in dataset.to_list()]
    (sample,) = parse_rows(lines)
    assert sample.question == "q" and sample.response == "a"
    assert sample.retrieved_contexts == ["c1", "c2"] and sample.retrieved_context_ids == ["1", "2"]
    assert sample.reference == "r" and sample.reference_context_ids == ["2"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"question": "ok"}\n{"question": ', "rag.jsonl:2: not valid JSON"),
        ('{"question": "ok"}\n\n[1, 2]', "rag.jsonl:3: expected a JSON object"),
        ('{"question": ""}', "rag.jsonl:1: question"),
        ('{"reference": "no question"}', "rag.jsonl:1: question: Field required"),
        ('{"question": "q", "colour": "red"}', "rag.jsonl:1: colour"),
        ('{"question": "q", "reference_context_ids": "d1"}', "rag.jsonl:1: reference_context_ids"),
        ('{"id": 1, "question": "a"}\n{"id": "1", "question": "b"}', "rag.jsonl:2: duplicate id '1'"),
        ('{"user_input": "q", "bogus": 1}', "rag.jsonl:1: unknown field 'bogus'"),
        ("\n\n", "no rows"),
    ],
)
def test_malformed_rows_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rag.jsonl"
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    assert message in str(info.value)


def test_a_shadow_capture_scores_as_two_paired_configs(tmp_path: Path) -> None:
    """Rows with ``responses`` by model (what the gateway's shadow capture writes) are one config per model, in
    order of appearance, scored as given; a row the candidate failed on counts as failed for it, with why."""
    from typer.testing import CliRunner

    from eval.jobs import EvalRequest
    from ragswap.cli import app

    rows = []
    for i in range(8):
        candidate = {"acme@3": "the code is avalanche"} if i != 7 else {}
        rows.append(
            {
                "id": f"shadow-{i}",
                "question": "What is the code word?",
                "reference": "The code word is pelican.",
                "responses": {"acme@2": "the code word is pelican", **candidate},
                "capture": {"alias": "bot", "latency_s": {"acme@2": 0.25, "acme@3": 0.5}},
            }
        )
    path = tmp_path / "capture.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = load_dataset(path)
    request = EvalRequest(samples=samples, score_only=True, metrics=["rouge_l"])
    assert [c.name for c in request.configs("base")] == ["acme@2", "acme@3"]
    assert (
        samples[0].given_response("acme@3") == "the code is avalanche"
        and samples[0].given_latency("acme@3") == 0.5
    )

    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["eval", "run", "--dataset", str(path), "--score-only", "--metric", "rouge_l", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads((out / "summary.json").read_text())
    served, candidate = summary["results"]["acme@2"]["rouge_l"], summary["results"]["acme@3"]["rouge_l"]
    assert served["n_ok"] == 8 and served["mean"] > candidate["mean"]
    assert candidate["n_ok"] == 7 and candidate["n_failed"] == 1
    (comparison,) = summary["comparisons"]
    assert (comparison["baseline"], comparison["candidate"]) == ("acme@2", "acme@3")
    traces = [json.loads(x) for x in (out / "traces.jsonl").read_text().splitlines()]
    failed = next(t for t in traces if t["config"] == "acme@3" and t["sample_id"] == "shadow-7")
    assert failed["error"] == "no response of acme@3 in the dataset"
    assert {t["latency_s"] for t in traces if t["config"] == "acme@2"} == {0.25}
