"""The HTML report of a run directory: side-by-side table, plots (PNG, base64-embedded), failures, worst samples.

One self-contained file, so a report can be attached to an issue or a pull request as it is.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from eval.records import RunSummary, SampleTrace
from eval.runner import read_summary, read_traces
from eval.settings import JUDGED_METRICS

WORST_PER_CONFIG = 5


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _scored_metrics(summary: RunSummary) -> list[str]:
    return [m for m in summary.metrics if any(r[m].n_ok for r in summary.results.values() if m in r)]


def plot_means(summary: RunSummary) -> str | None:
    """Grouped bars: metric means per config with 95 % bootstrap CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = _scored_metrics(summary)
    configs = list(summary.results)
    if not metrics or not configs:
        return None
    width = 0.8 / len(configs)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(metrics) * max(1, len(configs) / 2)), 4))
    x = np.arange(len(metrics))
    for i, config in enumerate(configs):
        means, low, high = [], [], []
        for metric in metrics:
            s = summary.results[config].get(metric)
            mean = s.mean if s and s.mean is not None else np.nan
            means.append(mean)
            low.append(mean - s.ci_low if s and s.ci_low is not None else 0.0)
            high.append(s.ci_high - mean if s and s.ci_high is not None else 0.0)
        ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=[low, high], capsize=3, label=config)
    ax.set_xticks(x, metrics, rotation=30, ha="right")
    ax.set_ylabel("mean (95 % bootstrap CI)")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.05)
    ax.legend(fontsize="small")
    ax.set_title("Metrics by config")
    return _png(fig)


def plot_distributions(summary: RunSummary, traces: list[SampleTrace]) -> str | None:
    """Per-sample score distributions: one panel per metric, one box (with points) per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = _scored_metrics(summary)
    configs = list(summary.results)
    if not metrics:
        return None
    cols = min(4, len(metrics))
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        data = []
        for config in configs:
            data.append(
                [
                    t.scores[metric].value
                    for t in traces
                    if t.config == config and metric in t.scores and t.scores[metric].status == "ok"
                ]
            )
        ax.boxplot([d or [np.nan] for d in data], tick_labels=configs, showfliers=False)
        rng = np.random.default_rng(0)
        for i, values in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=8, alpha=0.6)
        ax.set_title(metric, fontsize="small")
        ax.tick_params(axis="x", labelrotation=20, labelsize="x-small")
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def worst_samples(
    traces: list[SampleTrace], metrics: list[str], n: int = WORST_PER_CONFIG
) -> dict[str, list[Any]]:
    """Per config, the samples with the lowest mean score over the metrics that scored them."""
    out: dict[str, list[Any]] = {}
    for trace in traces:
        values = [
            trace.scores[m].value
            for m in metrics
            if m in trace.scores and trace.scores[m].status == "ok" and trace.scores[m].value is not None
        ]
        if values:
            out.setdefault(trace.config, []).append(
                (sum(v for v in values if v is not None) / len(values), trace)
            )
    return {config: sorted(items, key=lambda item: item[0])[:n] for config, items in out.items()}


def render_report(summary: RunSummary, traces: list[SampleTrace]) -> str:
    """The report's HTML."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True
    )
    judged = [m for m in JUDGED_METRICS if m in summary.metrics]
    return env.get_template("report.html.j2").render(
        summary=summary,
        configs=list(summary.results),
        means_png=plot_means(summary),
        dist_png=plot_distributions(summary, traces),
        worst=worst_samples(traces, judged or summary.metrics),
        metrics=summary.metrics,
        judged=judged,
    )


def write_report(run_dir: Path) -> Path:
    """(Re)write ``report.html`` from ``summary.json`` and ``traces.jsonl``."""
    html = render_report(read_summary(run_dir), read_traces(run_dir))
    path = run_dir / "report.html"
    path.write_text(html, encoding="utf-8")
    return path
