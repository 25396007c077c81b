"""Evaluation datasets: JSONL, either ragswap's rows or ragas ``EvaluationDataset`` rows.

ragswap rows: ``{"question", "reference"?, "reference_contexts"?, "reference_context_ids"?, "id"?}``.
ragas rows: ``{"user_input", "response"?, "retrieved_contexts"?, "reference"?, "reference_contexts"?,
"retrieved_context_ids"?, "reference_context_ids"?}`` (what ``EvaluationDataset.to_jsonl`` writes).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from eval.records import EvalSample

_RAGAS_KEYS = {
    "user_input": "question",
    "response": "response",
    "retrieved_contexts": "retrieved_contexts",
    "retrieved_context_ids": "retrieved_context_ids",
    "reference": "reference",
    "reference_contexts": "reference_contexts",
    "reference_context_ids": "reference_context_ids",
}
# ragas sample fields ragswap does not use; accepted and dropped so that any ragas export loads.
_RAGAS_IGNORED = {
    "multi_responses",
    "rubrics",
    "persona_name",
    "query_style",
    "query_length",
    "synthesizer_name",
}


class DatasetError(ValueError):
    """A dataset row is not valid; the message names the file and line."""


def _normalise(row: dict[str, Any], line: int) -> dict[str, Any]:
    if "user_input" in row:
        out: dict[str, Any] = {}
        for key, value in row.items():
            if key in _RAGAS_KEYS:
                out[_RAGAS_KEYS[key]] = value
            elif key == "id":
                out["id"] = value
            elif key not in _RAGAS_IGNORED:
                raise DatasetError(f"unknown field {key!r}")
        row = out
    row = {k: v for k, v in row.items() if v is not None}
    if "id" in row:
        row["id"] = str(row["id"])
    else:
        row["id"] = str(line)
    for key in ("reference_context_ids", "retrieved_context_ids"):
        # Ids may be numbers (BEIR corpus ids often are); a bare string is an error, not a list of characters.
        if isinstance(row.get(key), list):
            row[key] = [str(x) if isinstance(x, int | str) else x for x in row[key]]
    return row


def parse_rows(lines: Iterable[str], source: str = "<dataset>") -> list[EvalSample]:
    """Parse JSONL text; blank lines are skipped, ids must be unique."""
    samples: list[EvalSample] = []
    seen: set[str] = set()
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{source}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{source}:{number}: expected a JSON object, got {type(row).__name__}")
        try:
            sample = EvalSample.model_validate(_normalise(row, number))
        except DatasetError as exc:
            raise DatasetError(f"{source}:{number}: {exc}") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or "row"
            raise DatasetError(f"{source}:{number}: {field}: {first.get('msg')}") from exc
        if sample.id in seen:
            raise DatasetError(f"{source}:{number}: duplicate id {sample.id!r}")
        seen.add(sample.id)
        samples.append(sample)
    if not samples:
        raise DatasetError(f"{source}: no rows")
    return samples


def load_dataset(path: Path) -> list[EvalSample]:
    """Read a JSONL dataset file."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    with path.open(encoding="utf-8") as fh:
        return parse_rows(fh, str(path))
