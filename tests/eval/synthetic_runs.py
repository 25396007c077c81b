"""Run directories from given per-sample scores, written by the real runner (``write_summary``): for the tests of
paired comparisons and gates, where what matters is the statistics over known scores, not a judge's answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from eval.records import (
    EvalSample,
    JudgeCheck,
    JudgeInfo,
    MetricScore,
    RunConfig,
    RunSummary,
    SampleTrace,
)
from eval.runner import RunSpec, read_traces, summarise_run, write_summary

Scores = Mapping[str, Mapping[str, Sequence[float | None]]]
"""config → metric → one score per sample (``None`` = the metric failed on that sample)."""


def write_run(
    run_dir: Path,
    scores: Scores,
    *,
    judge_check: JudgeCheck | None = None,
    questions: Sequence[str] | None = None,
) -> RunSummary:
    configs = list(scores)
    metrics = list(dict.fromkeys(m for per_metric in scores.values() for m in per_metric))
    n = len(next(iter(next(iter(scores.values())).values())))
    asked = list(questions) if questions else [f"Question {i}?" for i in range(n)]
    samples = [EvalSample(id=str(i), question=asked[i]) for i in range(n)]
    spec = RunSpec(
        run_id=run_dir.name,
        dataset="synthetic",
        samples=samples,
        configs=[RunConfig(name=c, model=c) for c in configs],
        metrics=metrics,
        judge=JudgeInfo(url="http://judge", model="judge"),
        bootstrap_samples=1000,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(spec.model_dump_json(), encoding="utf-8")
    with (run_dir / "traces.jsonl").open("w", encoding="utf-8") as fh:
        for config in configs:
            for i, sample in enumerate(samples):
                trace = SampleTrace(sample_id=sample.id, config=config, question=sample.question)
                for metric in metrics:
                    value = scores[config][metric][i]
                    trace.scores[metric] = (
                        MetricScore(name=metric, status="ok", value=value)
                        if value is not None
                        else MetricScore(
                            name=metric,
                            status="failed",
                            reason="judge output is not a valid NLIStatementOutput",
                            failure_kind="parse",
                        )
                    )
                fh.write(trace.model_dump_json() + "\n")
    return write_summary(
        run_dir, summarise_run(spec, read_traces(run_dir), 1.0, 0, 0, judge_check=judge_check)
    )
