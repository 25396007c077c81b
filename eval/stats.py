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
