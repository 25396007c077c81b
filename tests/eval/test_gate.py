"""CI gates: ``ragswap eval gate``, :func:`eval.assert_gate` and the decision they share.

Runs are written from known per-sample scores by the real runner (``synthetic_runs.write_run``), so each
requirement's outcome can be stated in advance; the API route is tested on the real gateway in
``test_long_passages.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from eval import GateError, GateFailedError, Requirement, assert_gate, evaluate_gate
from eval.records import JudgeCheck, MetricAgreement
from ragswap.cli import app
from tests.eval.synthetic_runs import write_run

RNG = np.random.default_rng(3)
BASE = RNG.uniform(0.1, 0.7, size=12)


def _check(reliable: bool) -> JudgeCheck:
    agreement = MetricAgreement(
        metric="faithfulness",
        task="supported vs contradicted statements",
        n=20,
        n_agree=18 if reliable else 10,
        agreement=0.9 if reliable else 0.5,
        ci_low=0.7 if reliable else 0.3,
        ci_high=0.97 if reliable else 0.7,
        reliable=reliable,
    )
    return JudgeCheck(
        model="judge",
        url="http://judge",
        prompt_version="v",
        calibration_set="set",
        calibration_sha="sha",
        created_at="now",
        seconds=1.0,
        metrics={"faithfulness": agreement},
    )


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """Two configs on 12 samples: the adapter is 0.2 better on rouge_l, equal on ndcg, and faithfulness (judged,
    judge reliable) is 0.8 for both except 3 failed samples of the adapter."""
    write_run(
        tmp_path / "run",
        {
            "base": {"rouge_l": list(BASE), "ndcg": [0.6] * 12, "faithfulness": [0.8] * 12},
            "acme": {"rouge_l": list(BASE + 0.2), "ndcg": [0.6] * 12, "faithfulness": [0.8] * 9 + [None] * 3},
        },
        judge_check=_check(reliable=True),
    )
    return tmp_path / "run"


def test_requirements_parse() -> None:
    assert Requirement.parse("faithfulness>=0.7") == Requirement(
        "faithfulness>=0.7", "faithfulness", ">=", 0.7, False
    )
    relative = Requirement.parse(" rouge_l > base + 0.02 ")
    assert (relative.op, relative.threshold, relative.relative) == (">", 0.02, True)
    assert Requirement.parse("ndcg>=baseline-0.05").threshold == -0.05
    assert Requirement.parse("rouge_l>base").claims_difference
    assert not Requirement.parse("ndcg>=base-0.05").claims_difference
    for bad in ("rouge_l=>0.5", "rouge_l>>base", "bleu>0.1", "rouge_l>base*2", ""):
        with pytest.raises(GateError):
            Requirement.parse(bad)


def test_gate_decides_each_requirement(run: Path) -> None:
    from eval.runner import read_summary

    summary = read_summary(run)
    result = evaluate_gate(
        summary,
        [
            "rouge_l>base+0.1",  # +0.2 on every sample: passes
            "rouge_l>base+0.3",  # the CI's lower bound is 0.2
            "ndcg>=base-0.05",  # equal: within the non-inferiority margin
            "ndcg>base",  # equal: no detectable improvement
            "rouge_l>=0.9",  # absolute: the adapter's mean is about 0.6
            "faithfulness>=0.5",  # 3 of 12 failed (25 % > 10 %)
        ],
    )
    assert (result.candidate, result.baseline) == ("acme", "base") and not result.passed
    outcome = {c.requirement: c for c in result.checks}
    assert outcome["rouge_l>base+0.1"].passed and outcome["ndcg>=base-0.05"].passed
    assert outcome["rouge_l>base+0.1"].observed == pytest.approx(0.2) and outcome["rouge_l>base+0.1"].n == 12
    assert "lower bound +0.200 is not > +0.3" in outcome["rouge_l>base+0.3"].reasons[0]
    assert not outcome["ndcg>base"].passed and "not > +0" in outcome["ndcg>base"].reasons[0]
    assert outcome["rouge_l>=0.9"].reasons == [
        f"mean {summary.results['acme']['rouge_l'].mean:.3f} is not >= 0.9"
    ]
    (reason,) = outcome["faithfulness>=0.5"].reasons
    assert reason == "too many failed samples for candidate: 3/12 (25% > 10%)"
    assert outcome["faithfulness>=0.5"].judge == "0.90 [0.70, 0.97]"
    # A looser failure budget lets the same requirement pass.
    assert evaluate_gate(summary, ["faithfulness>=0.5"], max_failed_fraction=0.3).passed
    # The decision serialises to JSON (decision records, the API).
    assert json.loads(result.model_dump_json())["checks"][0]["passed"] is True


def test_unreliable_or_unchecked_judge_fails_judged_requirements(tmp_path: Path) -> None:
    scores = {"base": {"faithfulness": [0.9] * 8, "rouge_l": [0.5] * 8}}
    unreliable = write_run(tmp_path / "u", scores, judge_check=_check(reliable=False))
    result = evaluate_gate(unreliable, ["faithfulness>=0.5", "rouge_l>=0.4"])
    judged, exact = result.checks
    assert not judged.passed and judged.reasons[0].startswith("judge unreliable: calibration agreement 0.50")
    assert exact.passed  # an exact metric does not depend on the judge
    unchecked = write_run(tmp_path / "n", scores)
    (check,) = evaluate_gate(unchecked, ["faithfulness>=0.5"]).checks
    assert not check.passed and "judge not checked" in check.reasons[0]
    assert evaluate_gate(unchecked, ["faithfulness>=0.5"], allow_unchecked_judge=True).passed


def test_configs_and_pairs(tmp_path: Path, run: Path) -> None:
    from eval.runner import read_summary

    summary = read_summary(run)
    with pytest.raises(GateError, match="not in run"):
        evaluate_gate(summary, ["rouge_l>=0.1"], candidate="nope")
    # Swapping the roles flips the paired comparison: base is worse than the adapter.
    (check,) = evaluate_gate(summary, ["rouge_l<base-0.1"], candidate="base", baseline="acme").checks
    assert check.passed and check.observed == pytest.approx(-0.2)
    single = write_run(tmp_path / "single", {"only": {"rouge_l": [0.5] * 6}})
    with pytest.raises(GateError, match="one config"):
        evaluate_gate(single, ["rouge_l>base"])
    three = write_run(tmp_path / "three", {c: {"rouge_l": [0.5] * 6} for c in ("a", "b", "c")})
    with pytest.raises(GateError, match="name the candidate"):
        evaluate_gate(three, ["rouge_l>=0.1"])
    few = write_run(tmp_path / "few", {"a": {"rouge_l": [0.1] * 3}, "b": {"rouge_l": [0.9] * 3}})
    (check,) = evaluate_gate(few, ["rouge_l>base"]).checks
    assert check.reasons == ["too few paired samples: 3 < 5"]


def test_cli_exit_codes_and_table(run: Path) -> None:
    runner = CliRunner()
    passed = runner.invoke(app, ["eval", "gate", str(run), "--require", "rouge_l>base+0.1"])
    assert passed.exit_code == 0, passed.output
    assert "gate passed" in passed.output and "rouge_l>base+0.1" in passed.output
    failed = runner.invoke(
        app, ["eval", "gate", str(run), "--require", "rouge_l>base+0.1", "--require", "faithfulness>=0.5"]
    )
    assert failed.exit_code == 1 and "FAIL" in failed.output and "too many failed samples" in failed.output
    assert "1 of 2 requirements hold" in failed.output
    as_json = runner.invoke(app, ["eval", "gate", str(run), "--require", "ndcg>=base", "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["passed"] is True
    bad = runner.invoke(app, ["eval", "gate", str(run), "--require", "rouge_l=>1"])
    assert bad.exit_code == 2 and "cannot read requirement" in bad.output
    missing = runner.invoke(app, ["eval", "gate", str(run.parent), "--require", "rouge_l>=0"])
    assert missing.exit_code == 2 and "not a run directory" in missing.output


def test_assert_gate_for_pytest(run: Path) -> None:
    result = assert_gate(run, "rouge_l>base+0.1", "ndcg>=base-0.05")
    assert result.passed and len(result.checks) == 2
    with pytest.raises(GateFailedError) as info:
        assert_gate(run, "rouge_l>=0.9", candidate="acme")
    assert isinstance(info.value, AssertionError)
    assert "rouge_l>=0.9" in str(info.value) and "gate FAILED" in str(info.value)
    assert not info.value.result.passed
