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
