"""Paired comparisons: ``ragswap eval compare`` and the A/B comparisons inside a run.

Runs without a judge (exact metrics on answers already in the dataset) go through the real runner; the
statistics tests use runs written from known per-sample scores (``synthetic_runs.write_run``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from eval.compare import compare_runs
from eval.paired import paired_delta
from eval.records import EvalSample, JudgeInfo, RunConfig, flip
from eval.runner import RunSpec, execute_run
from eval.scoring import build_scorer
from ragswap.cli import app
from tests.eval.synthetic_runs import write_run


def _run(tmp_path: Path, name: str, answer: str, retrieved_ids: list[str], n: int = 8) -> Path:
    samples = [
        EvalSample(
            id=str(i),
            question=f"What is the capital of France? ({i})",
            reference="Paris is the capital of France",
            response=answer,
            retrieved_contexts=["text"] * len(retrieved_ids),
            retrieved_context_ids=retrieved_ids,
            reference_context_ids=["d1"],
        )
        for i in range(n)
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
    (comparison,) = compare_runs(a, b)
    deltas = {d.metric: d for d in comparison.deltas}
    mrr = deltas["mrr"]
    assert (mrr.mean_baseline, mrr.mean_candidate, mrr.n_pairs) == (0.5, 1.0, 8)
    assert mrr.delta == pytest.approx(0.5) and (mrr.ci_low, mrr.ci_high) == pytest.approx((0.5, 0.5))
    # 8 of 8 samples better: Wilcoxon's exact two-sided p is 2 / 2**8.
    assert mrr.p_value == pytest.approx(2 / 256) and mrr.verdict == "better" and mrr.n_better == 8
    assert deltas["rouge_l"].delta == pytest.approx(1.0) and deltas["rouge_l"].verdict == "better"
    assert deltas["recall"].delta == 0.0 and deltas["recall"].verdict == "no difference"
    assert deltas["recall"].p_value == 1.0 and deltas["recall"].n_tied == 8
    assert comparison.baseline == "a:given" and comparison.candidate == "b:given"
    line = comparison.verdict_line()
    assert "better on mrr by +0.50 [0.50, 0.50]" in line and "no detectable difference on recall" in line

    result = CliRunner().invoke(app, ["eval", "compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "better on rouge_l by +1.00" in result.output and "0.00781" in result.output
    assert "8/0/0" in result.output  # better/worse/tied


def test_paired_statistics_see_what_overlapping_cis_miss(tmp_path: Path) -> None:
    # Hard and easy questions: per-sample scores spread over [0.1, 0.9] in both configs, so the two configs' own
    # 95 % CIs overlap widely; but B is 0.04-0.06 better on every single sample.
    rng = np.random.default_rng(7)
    base = rng.uniform(0.1, 0.85, size=20)
    better = base + rng.uniform(0.04, 0.06, size=20)
    summary = write_run(
        tmp_path / "ab",
        {"base": {"rouge_l": list(base)}, "tuned": {"rouge_l": list(better)}},
    )
    a, b = summary.results["base"]["rouge_l"], summary.results["tuned"]["rouge_l"]
    assert a.ci_high is not None and b.ci_low is not None and a.ci_high > b.ci_low  # the CIs overlap
    (comparison,) = summary.comparisons
    (delta,) = comparison.deltas
    assert delta.verdict == "better" and delta.n_better == 20 and delta.p_value is not None
    assert 0.04 <= delta.ci_low <= delta.delta <= delta.ci_high <= 0.06  # type: ignore[operator]
    assert delta.p_value < 1e-5
    assert comparison.verdict_line().startswith(
        "tuned vs base (20 paired samples): better on rouge_l by +0.05"
    )

    # Few samples: 4 of 4 better by a lot is still not detectable (the smallest possible Wilcoxon p is 0.125).
    few = paired_delta("rouge_l", "a", "b", {str(i): 0.2 for i in range(4)}, {str(i): 0.7 for i in range(4)})
    assert few.ci_low == pytest.approx(0.5) and few.p_value == pytest.approx(0.125)
    assert few.verdict == "no difference"
    # A single pair cannot be compared; a sample scored by only one config is left out and counted.
    one = paired_delta("rouge_l", "a", "b", {"1": 0.2, "2": 0.4}, {"1": 0.7})
    assert one.verdict == "insufficient" and one.n_pairs == 1 and one.n_unpaired == 1
    # Noise around zero: no difference.
    noise = rng.normal(0, 0.05, size=30)
    same = paired_delta(
        "x", "a", "b", {str(i): 0.5 for i in range(30)}, {str(i): 0.5 + n for i, n in enumerate(noise)}
    )
    assert same.verdict == "no difference" and same.ci_low < 0 < same.ci_high  # type: ignore[operator]


def test_a_comparison_seen_from_the_other_side(tmp_path: Path) -> None:
    summary = write_run(
        tmp_path / "flip",
        {"a": {"ndcg": [0.2] * 8}, "b": {"ndcg": [0.5] * 4 + [0.6] * 4}},
    )
    forward = summary.comparison("a", "b")
    backward = summary.comparison("b", "a")
    assert forward is not None and backward is not None
    (f,), (r,) = forward.deltas, backward.deltas
    assert f.verdict == "better" and r.verdict == "worse"
    assert r.delta == pytest.approx(-f.delta)  # type: ignore[operator]
    assert (r.ci_low, r.ci_high) == pytest.approx((-f.ci_high, -f.ci_low))  # type: ignore[operator]
    assert (r.n_better, r.n_worse, r.p_value) == (f.n_worse, f.n_better, f.p_value)
    assert flip(flip(forward)) == forward


def test_runs_on_different_samples_are_refused(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", {"m": {"rouge_l": [0.1, 0.2, 0.3]}})
    write_run(tmp_path / "b", {"m": {"rouge_l": [0.1, 0.2, 0.3]}}, questions=["Q1?", "Q2?", "Q3?"])
    assert a.comparisons == []  # one config: nothing to compare inside the run
    with pytest.raises(ValueError, match="asks different questions"):
        compare_runs(tmp_path / "a", tmp_path / "b")
    result = CliRunner().invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 2 and "not on the same dataset" in result.output


def test_rerun_into_the_same_directory_resumes(tmp_path: Path) -> None:
    run = _run(tmp_path, "r", "Paris", ["d1"], n=4)
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
    summary = json.loads((run / "summary.json").read_text())
    assert summary["samples_per_minute"] > 0  # the two samples scored on resume, per minute
