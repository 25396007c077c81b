"""The long-passage fixture (``tests/fixtures/eval/long_passages.jsonl``, see its README) as evaluation samples."""

from __future__ import annotations

import json
from pathlib import Path

from eval.records import EvalSample, RetrievedChunk, SampleTrace

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "eval" / "long_passages.jsonl"
ROWS = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


def long_sample(i: int, passages: int = 4) -> tuple[EvalSample, SampleTrace]:
    """Row ``i`` answered with its reference, against its own passage and the next rows' (``passages`` in all)."""
    row = ROWS[i]
    retrieved = [ROWS[(i + k) % len(ROWS)] for k in range(passages)]
    sample = EvalSample(id=row["id"], question=row["question"], reference=row["reference"])
    trace = SampleTrace(
        sample_id=row["id"],
        config="long",
        question=row["question"],
        answer=row["reference"],
        retrieved=[RetrievedChunk(id=r["id"], doc_id=r["id"], text=r["passage"]) for r in retrieved],
    )
    return sample, trace
