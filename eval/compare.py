"""Compare two run directories metric by metric with paired statistics over the samples both runs scored.

What changed between two adapters, or two builds of one: each config of run B against the same-named config of
run A (or the only config of each), per metric the paired delta B − A with its bootstrap CI, the Wilcoxon p-value
and a verdict (see :mod:`eval.paired`). The runs must be on the same samples: a sample id whose question differs
between the runs is an error, not a silent mismatch.
"""

from __future__ import annotations

from pathlib import Path

from eval.paired import compare_configs
from eval.records import Comparison, RunSummary, SampleTrace
from eval.runner import read_summary, read_traces


def pair_configs(a: RunSummary, b: RunSummary) -> list[tuple[str, str]]:
    """Configs with the same name; if the runs share none and each has one config, those two."""
    shared = [name for name in a.results if name in b.results]
    if shared:
        return [(name, name) for name in shared]
    if len(a.results) == 1 and len(b.results) == 1:
        return [(next(iter(a.results)), next(iter(b.results)))]
    raise ValueError(
        f"the runs share no config name (A: {sorted(a.results)}, B: {sorted(b.results)}); "
        "compare runs of the same configs, or runs with one config each"
    )


def check_same_samples(traces_a: list[SampleTrace], traces_b: list[SampleTrace]) -> None:
    """Raise when the runs share no sample, or a shared sample id asks a different question."""
    questions_a = {t.sample_id: t.question for t in traces_a}
    questions_b = {t.sample_id: t.question for t in traces_b}
    shared = set(questions_a) & set(questions_b)
    if not shared:
        raise ValueError(
            "the runs share no sample id: a paired comparison needs the same samples in both runs"
        )
    different = sorted(s for s in shared if questions_a[s] != questions_b[s])
    if different:
        raise ValueError(
            f"sample {different[0]!r} asks different questions in the two runs ({len(different)} such): "
            "the runs are not on the same dataset"
        )


def compare_runs(run_a: Path, run_b: Path, *, resamples: int = 1000) -> list[Comparison]:
    """Paired comparisons B − A for every metric both runs computed, per paired config."""
    a, b = read_summary(run_a), read_summary(run_b)
    traces_a, traces_b = read_traces(run_a), read_traces(run_b)
    check_same_samples(traces_a, traces_b)
    metrics = [m for m in a.metrics if m in b.metrics]
    unreliable = set()
    for summary in (a, b):
        if summary.judge_check is not None:
            unreliable.update(summary.judge_check.unreliable())
    comparisons = []
    for config_a, config_b in pair_configs(a, b):
        comparison = compare_configs(
            traces_a,
            config_a,
            config_b,
            metrics,
            resamples=resamples,
            unreliable=unreliable,
            candidate_traces=traces_b,
        )
        comparisons.append(relabel(comparison, f"{run_a.name}:{config_a}", f"{run_b.name}:{config_b}"))
    return comparisons


def relabel(comparison: Comparison, baseline: str, candidate: str) -> Comparison:
    """The comparison with other names for its two sides (``RUN:config`` when they come from two runs)."""
    deltas = [d.model_copy(update={"baseline": baseline, "candidate": candidate}) for d in comparison.deltas]
    return Comparison(baseline=baseline, candidate=candidate, deltas=deltas)
