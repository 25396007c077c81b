"""Diff two run directories metric by metric (what changed between two adapters, or two builds of one)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eval.records import MetricSummary, RunSummary
from eval.runner import read_summary


@dataclass(frozen=True)
class MetricDelta:
    """One metric of one config pair; ``significant`` when the two 95 % CIs do not overlap."""

    config_a: str
    config_b: str
    metric: str
    a: MetricSummary
    b: MetricSummary

    @property
    def delta(self) -> float | None:
        if self.a.mean is None or self.b.mean is None:
            return None
        return self.b.mean - self.a.mean

    @property
    def significant(self) -> bool:
        a, b = self.a, self.b
        if None in (a.ci_low, a.ci_high, b.ci_low, b.ci_high):
            return False
        assert (
            a.ci_low is not None and a.ci_high is not None and b.ci_low is not None and b.ci_high is not None
        )
        return a.ci_high < b.ci_low or b.ci_high < a.ci_low


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


def compare_runs(run_a: Path, run_b: Path) -> list[MetricDelta]:
    """Deltas B − A for every metric both runs computed, per paired config."""
    a, b = read_summary(run_a), read_summary(run_b)
    metrics = [m for m in a.metrics if m in b.metrics]
    deltas = []
    for config_a, config_b in pair_configs(a, b):
        for metric in metrics:
            sa, sb = a.results[config_a].get(metric), b.results[config_b].get(metric)
            if sa is not None and sb is not None:
                deltas.append(MetricDelta(config_a, config_b, metric, sa, sb))
    return deltas
