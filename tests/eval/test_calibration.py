"""Judges that are checked: a judge answering at random or "yes" to everything is flagged on every judged metric.

The broken judges are the stand-in judge of ``conftest.py`` (real HTTP servers answering valid JSON at random or
always "yes"); the calibration set, prompts, budget, runner, summary, report, CLI and gate are the real ones. The
real SmolLM2 judge's figures are checked in ``test_long_passages.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.calibration import CALIBRATION_SET, load_calibration_set
from eval.scoring import JudgeConfig, build_scorer
from eval.settings import JUDGED_METRICS
from ragswap.cli import app
from tests.eval.standin_judge import StandInJudge

ROWS = [
    {
        "user_input": f"What is the capital of France? ({i})",
        "response": "The capital of France is Paris.",
        "retrieved_contexts": ["Paris is the capital and largest city of France.", "Berlin is in Germany."],
        "retrieved_context_ids": ["paris", "berlin"],
        "reference": "Paris is the capital of France.",
        "reference_context_ids": ["paris"],
    }
    for i in range(4)
]


def test_the_calibration_set_is_balanced() -> None:
    items = load_calibration_set(CALIBRATION_SET)
    for metric in JUDGED_METRICS:
        mine = [i for i in items if i.metric == metric]
        assert len(mine) >= 16, metric
        if metric != "answer_relevancy":
            assert sum(i.label or 0 for i in mine) * 2 == len(mine)  # chance is 0.5
    assert len({i.id for i in items}) == len(items)


@pytest.mark.parametrize("mode", ["always-yes", "random"])
def test_broken_judge_is_flagged_on_every_metric(
    mode: str, stand_in_judge: Callable[..., StandInJudge], embedding_model_path: Path, tmp_path: Path
) -> None:
    judge = stand_in_judge(mode, max_model_len=8192)
    config = JudgeConfig(
        url=judge.url, model=f"stand-in-{mode}", cache_dir=None, judge_check=True, check_cache_dir=tmp_path
    )
    scorer = build_scorer(list(JUDGED_METRICS), config, embedding_model_path)
    check = asyncio.run(scorer.run_judge_check())
    assert sorted(check.unreliable()) == sorted(JUDGED_METRICS)
    for name, agreement in check.metrics.items():
        assert agreement.n >= 16 and agreement.n_failed == 0, name  # it answered, just not well
        assert agreement.ci_low is not None and agreement.ci_low <= 0.5
        assert "judge unreliable" in agreement.label()
        if mode == "always-yes" and name != "answer_relevancy":
            assert agreement.agreement == 0.5  # "yes" to balanced labels is exactly chance
    if mode == "always-yes":
        # "yes" as the generated question, noncommittal: both answers score 0, so on-topic never wins.
        assert check.metrics["answer_relevancy"].agreement == 0.0
    # Cached per judge model + endpoint + prompt version: a second check asks nothing.
    asked = len(judge.bodies)
    again = asyncio.run(scorer.run_judge_check())
    assert again.cached and len(judge.bodies) == asked and again.metrics == check.metrics


def test_unreliable_judge_is_shown_everywhere(
    stand_in_judge: Callable[..., StandInJudge], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    judge = stand_in_judge("always-yes", max_model_len=4096)
    monkeypatch.setenv("RAGSWAP_EVAL__CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RAGSWAP_EVAL__BOOTSTRAP_SAMPLES", "200")
    dataset = tmp_path / "rows.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    runner = CliRunner()
    judge_args = ["--judge-url", judge.url, "--judge-model", "stand-in-judge"]
    out = tmp_path / "run"
    args = ["eval", "run", "--dataset", str(dataset), "--score-only", "--out", str(out), *judge_args]
    args += ["--metric", "faithfulness", "--metric", "context_precision", "--metric", "mrr"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    # CLI: the judge check table, then the agreement next to each judged metric.
    assert result.output.count("judge unreliable") >= 4
    assert "0.50 [" in result.output and "judge window 4096 tokens (/v1/models)" in result.output

    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["judge_check"]["metrics"]) == ["context_precision", "faithfulness"]
    scored = summary["results"]["smollm2-135m-instruct"]
    for name in ("faithfulness", "context_precision"):
        assert scored[name]["n_ok"] == 4  # still computed, never hidden
        assert scored[name]["judge"]["reliable"] is False and scored[name]["judge"]["agreement"] == 0.5
    assert scored["mrr"]["judge"] is None and scored["mrr"]["mean"] == 1.0
    html = (out / "report.html").read_text()
    assert html.count("judge unreliable") >= 4 and "Judge check" in html

    # The gate fails the judged requirement for it, and passes the exact one.
    gate = runner.invoke(
        app, ["eval", "gate", str(out), "--require", "faithfulness>=0.5", "--require", "mrr>=0.5"]
    )
    assert (
        gate.exit_code == 1
        and "judge unreliable" in gate.output
        and "1 of 2 requirements hold" in gate.output
    )

    # `eval judge-check` alone: the cached result, exit 1 with --strict.
    check = runner.invoke(app, ["eval", "judge-check", *judge_args, "--metric", "faithfulness", "--strict"])
    assert check.exit_code == 1, check.output
    assert "judge unreliable" in check.output and "cached" in check.output
    as_json = runner.invoke(app, ["eval", "judge-check", *judge_args, "--metric", "faithfulness", "--json"])
    assert (
        as_json.exit_code == 0 and json.loads(as_json.stdout)["metrics"]["faithfulness"]["reliable"] is False
    )
    bad = runner.invoke(app, ["eval", "judge-check", *judge_args, "--metric", "rouge_l"])
    assert bad.exit_code == 2 and "not judged metrics" in bad.output
