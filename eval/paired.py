"""Paired comparisons: two configs scored on the same samples, compared sample by sample.

Two configs answering the same questions are not independent samples: a hard question is hard for both. Comparing
their two confidence intervals ("do the CIs overlap?") ignores that and misses real differences (or, with few
samples, claims ones that are not there). Here the unit is the per-sample difference candidate − baseline over the
samples both configs scored:

- the delta is the mean difference, its 95 % CI a percentile bootstrap over the samples (seeded, reproducible);
- the test is the Wilcoxon signed-rank test (two-sided; zero differences dropped), with the sign test's counts;
- the verdict is "better"/"worse" only when the CI excludes 0 **and** Wilcoxon's p < 0.05 (so at least 6
  samples that differ are needed), "insufficient" with fewer than 2 pairs, otherwise "no difference".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from eval.records import Comparison, JudgeCheck, PairedDelta, RunSummary, SampleTrace, Verdict
from eval.stats import bootstrap_ci, sign_test_p, wilcoxon_p

ALPHA = 0.05
"""Significance level of the verdicts (and the complement of the CIs' 95 %)."""
TIE = 1e-9
"""Per-sample differences smaller than this are ties (float noise between equal scores)."""


def scores_by_sample(traces: Iterable[SampleTrace], config: str, metric: str) -> dict[str, float]:
    """``sample_id → value`` of every sample ``config`` scored on ``metric`` (failed and skipped ones left out)."""
    out: dict[str, float] = {}
    for trace in traces:
        if trace.config != config:
            continue
        score = trace.scores.get(metric)
        if score is not None and score.status == "ok" and score.value is not None:
            out[trace.sample_id] = score.value
    return out


def paired_delta(
    metric: str,
    baseline: str,
    candidate: str,
    baseline_scores: Mapping[str, float],
    candidate_scores: Mapping[str, float],
    *,
    resamples: int = 1000,
    judge_unreliable: bool = False,
) -> PairedDelta:
    """candidate − baseline on ``metric`` over the samples both scored."""
    shared = sorted(set(baseline_scores) & set(candidate_scores))
    unpaired = len(set(baseline_scores) ^ set(candidate_scores))
    delta = PairedDelta(
        metric=metric,
        baseline=baseline,
        candidate=candidate,
        n_pairs=len(shared),
        n_unpaired=unpaired,
        judge_unreliable=judge_unreliable,
    )
    if not shared:
        return delta
    a = np.array([baseline_scores[s] for s in shared], dtype=np.float64)
    b = np.array([candidate_scores[s] for s in shared], dtype=np.float64)
    diffs = b - a
    delta.mean_baseline, delta.mean_candidate = float(a.mean()), float(b.mean())
    delta.delta = float(diffs.mean())
    delta.ci_low, delta.ci_high = bootstrap_ci(diffs.tolist(), resamples)
    delta.n_better = int((diffs > TIE).sum())
    delta.n_worse = int((diffs < -TIE).sum())
    delta.n_tied = len(shared) - delta.n_better - delta.n_worse
    delta.p_value = wilcoxon_p([d if abs(d) > TIE else 0.0 for d in diffs.tolist()])
    delta.sign_p_value = sign_test_p(delta.n_better, delta.n_worse)
    delta.verdict = verdict(delta)
    return delta


def verdict(delta: PairedDelta) -> Verdict:
    """ "better"/"worse" when the CI excludes 0 and Wilcoxon detects it; see the module docstring."""
    if delta.n_pairs < 2 or delta.ci_low is None or delta.ci_high is None or delta.p_value is None:
        return "insufficient"
    if delta.p_value < ALPHA and delta.ci_low > 0:
        return "better"
    if delta.p_value < ALPHA and delta.ci_high < 0:
        return "worse"
    return "no difference"


def compare_configs(
    traces: Sequence[SampleTrace],
    baseline: str,
    candidate: str,
    metrics: Sequence[str],
    *,
    resamples: int = 1000,
    unreliable: Iterable[str] = (),
    candidate_traces: Sequence[SampleTrace] | None = None,
) -> Comparison:
    """Every metric of ``candidate`` against ``baseline``; ``candidate_traces`` when it lives in another run."""
    flagged = set(unreliable)
    other = traces if candidate_traces is None else candidate_traces
    deltas = [
        paired_delta(
            metric,
            baseline,
            candidate,
            scores_by_sample(traces, baseline, metric),
            scores_by_sample(other, candidate, metric),
            resamples=resamples,
            judge_unreliable=metric in flagged,
        )
        for metric in metrics
    ]
    return Comparison(baseline=baseline, candidate=candidate, deltas=deltas)


def compare_all(
    traces: Sequence[SampleTrace],
    configs: Sequence[str],
    metrics: Sequence[str],
    *,
    resamples: int = 1000,
    unreliable: Iterable[str] = (),
) -> list[Comparison]:
    """Each config against every earlier one (the first config is everyone's baseline), as in a run's summary."""
    flagged = list(unreliable)
    return [
        compare_configs(traces, configs[i], configs[j], metrics, resamples=resamples, unreliable=flagged)
        for j in range(1, len(configs))
        for i in range(j)
    ]


def annotate_summary(
    summary: RunSummary, traces: Sequence[SampleTrace], judge_check: JudgeCheck | None, resamples: int = 1000
) -> RunSummary:
    """Add what a summary says beyond per-config aggregates: the judge check next to each judged metric, the
    count of context-overflow failures, and the paired comparison of every config with every earlier one."""
    unreliable: list[str] = []
    if judge_check is not None:
        summary.judge_check = judge_check
        unreliable = judge_check.unreliable()
        for metrics in summary.results.values():
            for name, result in metrics.items():
                result.judge = judge_check.metrics.get(name)
    summary.context_overflow_failures = sum(
        1
        for trace in traces
        for score in trace.scores.values()
        if score.status == "failed" and score.failure_kind == "context"
    )
    configs = [c.name for c in summary.configs if c.name in summary.results]
    summary.comparisons = compare_all(
        traces, configs, summary.metrics, resamples=resamples, unreliable=unreliable
    )
    return summary
