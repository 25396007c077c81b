"""Aggregates with bootstrap confidence intervals; failed and skipped samples are counted, not averaged."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from eval.records import MetricScore, MetricSummary, SampleTrace


def bootstrap_ci(
    values: Sequence[float], resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (seeded: the same traces give the same report)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values")
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def summarise(scores: Iterable[MetricScore], resamples: int = 1000) -> MetricSummary:
    """One metric's summary over samples."""
    values: list[float] = []
    reasons: Counter[str] = Counter()
    skipped = 0
    for score in scores:
        if score.status == "ok" and score.value is not None:
            values.append(score.value)
        elif score.status == "failed":
            reasons[_reason_class(score.reason or "unknown")] += 1
        else:
            skipped += 1
    summary = MetricSummary(n_ok=len(values), n_failed=sum(reasons.values()), n_skipped=skipped)
    summary.failure_reasons = dict(reasons.most_common())
    if values:
        summary.mean = float(np.mean(values))
        summary.ci_low, summary.ci_high = bootstrap_ci(values, resamples)
    return summary


def _reason_class(reason: str) -> str:
    # Group reasons that differ only in details (field paths, numbers) for the summary's counts.
    head = reason.split(" (")[0].split(": ")[0]
    return head[:120]


def summarise_traces(
    traces: Iterable[SampleTrace], metrics: Sequence[str], resamples: int = 1000
) -> dict[str, dict[str, MetricSummary]]:
    """config → metric → summary."""
    by_config: dict[str, list[SampleTrace]] = {}
    for trace in traces:
        by_config.setdefault(trace.config, []).append(trace)
    return {
        config: {
            metric: summarise((t.scores[metric] for t in items if metric in t.scores), resamples)
            for metric in metrics
        }
        for config, items in by_config.items()
    }


def proportion_ci(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (well-behaved at 0 %, 100 % and small ``trials``)."""
    from scipy.stats import binomtest

    if trials <= 0:
        raise ValueError("no trials")
    interval = binomtest(successes, trials).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; zero differences are dropped ("wilcox").

    1.0 when every difference is zero (nothing to detect). scipy picks the exact distribution for small samples
    without ties and the normal approximation (tie-corrected) otherwise.
    """
    from scipy.stats import wilcoxon

    nonzero = [d for d in differences if abs(d) > 1e-12]
    if not nonzero:
        return 1.0
    return float(wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided").pvalue)


def sign_test_p(better: int, worse: int) -> float:
    """Two-sided sign test: is ``better`` vs ``worse`` (ties dropped) unlike a fair coin?"""
    from scipy.stats import binomtest

    if better + worse == 0:
        return 1.0
    return float(binomtest(better, better + worse, 0.5).pvalue)
