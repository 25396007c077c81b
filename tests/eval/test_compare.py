"""Runs without a judge (exact metrics on answers already in the dataset), then ``ragswap eval compare``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.compare import compare_runs
from eval.records import EvalSample, JudgeInfo, RunConfig
from eval.runner import RunSpec, execute_run
from eval.scoring import build_scorer
from ragswap.cli import app


def _run(tmp_path: Path, name: str, answer: str, retrieved_ids: list[str]) -> Path:
    samples = [
        EvalSample(
            id=str(i),
            question="What is the capital of France?",
            reference="Paris is the capital of France",
            response=answer,
            retrieved_contexts=["text"] * len(retrieved_ids),
            retrieved_context_ids=retrieved_ids,
            reference_context_ids=["d1"],
        )
        for i in range(4)
    ]
    metrics = ["rouge_l", "mrr", "ndcg", "recall"]
    spec = RunSpec(
        run_id=name,
        dataset="inline",
        samples=samples,
        configs=[RunConfig(name="given", model="-")],
        metrics=metrics,
        judge=JudgeInfo(),
        k=2,
    )
    asyncio.run(execute_run(spec, tmp_path / name, build_scorer(metrics, None, None, k=2), None))
    return tmp_path / name


def test_compare_two_runs(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", "Berlin", ["d9", "d1"])
    b = _run(tmp_path, "b", "Paris is the capital of France", ["d1", "d9"])
    deltas = {d.metric: d for d in compare_runs(a, b)}
    assert deltas["mrr"].a.mean == 0.5 and deltas["mrr"].b.mean == 1.0
    assert deltas["mrr"].delta == pytest.approx(0.5) and deltas["mrr"].significant
    assert deltas["rouge_l"].delta == pytest.approx(1.0)
    assert deltas["recall"].delta == 0.0 and not deltas["recall"].significant

    summary = json.loads((a / "summary.json").read_text())
    assert summary["results"]["given"]["mrr"]["n_ok"] == 4
    result = CliRunner().invoke(app, ["eval", "compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "+0.500 *" in result.output and "+1.000 *" in result.output


def test_rerun_into_the_same_directory_resumes(tmp_path: Path) -> None:
    run = _run(tmp_path, "r", "Paris", ["d1"])
    lines = (run / "traces.jsonl").read_text().splitlines()
    (run / "traces.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])  # a torn last line
    spec = RunSpec.model_validate_json((run / "run.json").read_text())
    metrics = spec.metrics
    asyncio.run(execute_run(spec, run, build_scorer(metrics, None, None, k=2), None, report=False))
    traces = [
        json.loads(line) for line in (run / "traces.jsonl").read_text().splitlines() if line.startswith('{"')
    ]
    ids = sorted(t["sample_id"] for t in traces if t.get("scores"))
    assert ids == ["0", "1", "2", "3"]
