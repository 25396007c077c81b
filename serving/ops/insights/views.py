"""What the read-only views compute from public API bodies and files: blocking work, run it in a thread.

- :func:`scan_adapter_sources`: adapter directories under the adapter roots (what can be registered).
- :func:`read_manifest`: a version's ``ragswap.json``.
- :func:`compare_results`: B − A per paired config and metric, from two ``/results?traces=true`` bodies.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragswap import MANIFEST_FILE, AdapterManifest
from serving.errors import BadRequestError
from serving.ops.insights.protocol import (
    AdapterSource,
    AdapterSources,
    ConfigComparison,
    MetricDelta,
    RunComparison,
    SamplePair,
)

if TYPE_CHECKING:  # the eval package imports ragas: only when a comparison or report is asked for
    from eval import RunSummary, SampleTrace

PEFT_CONFIG = "adapter_config.json"
"""What makes a directory an adapter (peft's config file)."""
MAX_DEPTH = 4
"""Directories deeper than this under a root are not scanned."""
MAX_SOURCES = 500
MAX_SAMPLES = 200
"""Per-sample rows a comparison carries per config pair."""
MAX_DIRS = 20_000
"""Directories visited per scan at most (a root on a big shared volume must not stall the view)."""

PAIRED_STATS_NOTE = (
    "Deltas are differences of means; paired confidence intervals and tests come with the evaluation "
    "package's paired statistics (issue 15)."
)


def _source(directory: Path, root: Path, registered: dict[str, list[str]]) -> AdapterSource:
    source = AdapterSource(
        path=str(directory.relative_to(root)) or ".",
        absolute_path=str(directory),
        root=str(root),
        registered_as=registered.get(str(directory), []),
    )
    if (directory / MANIFEST_FILE).is_file():
        try:
            manifest = AdapterManifest.read(directory)
        except (OSError, ValueError) as exc:
            source.manifest_error = f"{MANIFEST_FILE} unreadable: {exc}"[:300]
        else:
            source.name = manifest.name
            source.base_model = manifest.base_model.name
            source.rank = manifest.adapter.r
    return source


def scan_adapter_sources(roots: list[Path], registered_paths: dict[str, list[str]]) -> AdapterSources:
    """Directories holding a peft ``adapter_config.json`` under each root (symlinks not followed, bounded).

    Args:
        roots: ``server.adapter_roots``.
        registered_paths: resolved directory → ``name@version`` of the versions registered from it.
    """
    found: list[AdapterSource] = []
    visited = 0
    truncated = False
    real_roots = [root.expanduser().resolve(strict=False) for root in roots]
    for root in real_roots:
        if not root.is_dir():
            continue
        for current, dirs, files in os.walk(root, followlinks=False):
            visited += 1
            here = Path(current)
            depth = len(here.relative_to(root).parts)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and depth < MAX_DEPTH)
            if PEFT_CONFIG in files:
                found.append(_source(here, root, registered_paths))
                dirs[:] = []  # an adapter's own sub-directories are checkpoints, not adapters
            if len(found) >= MAX_SOURCES or visited >= MAX_DIRS:
                truncated = True
                break
        if truncated:
            break
    return AdapterSources(roots=[str(r) for r in real_roots], data=found, truncated=truncated)


def registered_paths(adapters: list[dict[str, Any]]) -> dict[str, list[str]]:
    """``/v1/adapters`` data → resolved path → refs."""
    out: dict[str, list[str]] = defaultdict(list)
    for adapter in adapters:
        out[str(Path(adapter["path"]).resolve(strict=False))].append(str(adapter["model"]))
    return dict(out)


def read_manifest(path: str) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest as JSON, None) or (None, why there is none)."""
    directory = Path(path)
    if not (directory / MANIFEST_FILE).is_file():
        return None, f"no {MANIFEST_FILE} in the adapter directory (a plain peft adapter)"
    try:
        return AdapterManifest.read(directory).model_dump(mode="json"), None
    except (OSError, ValueError) as exc:
        return None, f"{MANIFEST_FILE} unreadable: {exc}"[:300]


def _parse(results: dict[str, Any]) -> tuple[RunSummary, list[SampleTrace]]:
    from eval import RunSummary, SampleTrace

    summary = RunSummary.model_validate(results["summary"])
    traces = [SampleTrace.model_validate(t) for t in results.get("traces") or []]
    return summary, traces


def _scores(traces: list[SampleTrace], config: str, metric: str) -> dict[str, float]:
    out = {}
    for trace in traces:
        if trace.config == config and (value := _value(trace, metric)) is not None:
            out[trace.sample_id] = value
    return out


def _value(trace: SampleTrace, metric: str) -> float | None:
    score = trace.scores.get(metric)
    return (
        float(score.value) if score is not None and score.status == "ok" and score.value is not None else None
    )


def _sample_pairs(
    traces_a: list[SampleTrace], traces_b: list[SampleTrace], config_a: str, config_b: str, metrics: list[str]
) -> list[SamplePair]:
    by_id_b = {t.sample_id: t for t in traces_b if t.config == config_b}
    pairs = []
    for ta in traces_a:
        tb = by_id_b.get(ta.sample_id)
        if ta.config != config_a or tb is None:
            continue
        pairs.append(
            SamplePair(
                sample_id=ta.sample_id,
                question=ta.question,
                answer_a=ta.answer,
                answer_b=tb.answer,
                scores_a={m: _value(ta, m) for m in metrics},
                scores_b={m: _value(tb, m) for m in metrics},
            )
        )
    return sorted(pairs, key=lambda p: _natural(p.sample_id))


def _natural(sample_id: str) -> tuple[int, int, str]:
    """Dataset order for positional ids ("1", "2", …, "10"), then other ids alphabetically."""
    return (0, int(sample_id), "") if sample_id.isdigit() else (1, 0, sample_id)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compare_results(a: dict[str, Any], b: dict[str, Any]) -> RunComparison:
    """B − A for every metric both runs computed, per config pair (paired over samples with the same id).

    Raises:
        BadRequestError: the runs have no config in common and are not one config each.
    """
    from eval import pair_configs

    summary_a, traces_a = _parse(a)
    summary_b, traces_b = _parse(b)
    try:
        pairs = pair_configs(summary_a, summary_b)
    except ValueError as exc:
        raise BadRequestError(str(exc), param="b", code="runs_not_comparable") from exc
    metrics = [m for m in summary_a.metrics if m in summary_b.metrics]
    out = []
    for config_a, config_b in pairs:
        deltas = []
        for metric in metrics:
            sa = summary_a.results[config_a].get(metric)
            sb = summary_b.results[config_b].get(metric)
            scores_a = _scores(traces_a, config_a, metric)
            scores_b = _scores(traces_b, config_b, metric)
            shared = sorted(scores_a.keys() & scores_b.keys())
            mean_a = sa.mean if sa is not None else _mean(list(scores_a.values()))
            mean_b = sb.mean if sb is not None else _mean(list(scores_b.values()))
            deltas.append(
                MetricDelta(
                    metric=metric,
                    mean_a=mean_a,
                    mean_b=mean_b,
                    delta=mean_b - mean_a if mean_a is not None and mean_b is not None else None,
                    paired_delta=_mean([scores_b[s] - scores_a[s] for s in shared]),
                    n_pairs=len(shared),
                    n_a=len(scores_a),
                    n_b=len(scores_b),
                )
            )
        samples = _sample_pairs(traces_a, traces_b, config_a, config_b, metrics)
        out.append(
            ConfigComparison(
                config_a=config_a,
                config_b=config_b,
                metrics=deltas,
                samples=samples[:MAX_SAMPLES],
                samples_truncated=len(samples) > MAX_SAMPLES,
            )
        )
    return RunComparison(
        a=str(a.get("id", summary_a.run_id)),
        b=str(b.get("id", summary_b.run_id)),
        dataset_a=summary_a.dataset,
        dataset_b=summary_b.dataset,
        pairs=out,
        note=PAIRED_STATS_NOTE,
    )
