"""RAG evaluation: RAGAS metrics with a structured-output judge, IR metrics, offline runs, reports, API jobs.

Public API (imported lazily so that ``ragswap --help`` does not import ragas):

- :class:`EvalSettings` — the ``eval`` settings section.
- :func:`load_dataset`, :class:`DatasetError` — JSONL datasets (ragswap rows or ragas ``EvaluationDataset``).
- :class:`JudgeLLM`, :class:`JudgeConfig` — the judge; :func:`build_scorer`, :class:`Scorer` — metrics.
- :class:`EvalRequest`, :func:`prepare_run`, :func:`execute_run` — runs into a run directory.
- :func:`write_report`, :func:`compare_runs` — HTML report and run diffs.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# ragas sends a blocking telemetry POST per LLM call unless told not to; it must be set before ragas is imported,
# and every ragas import in ragswap goes through this package.
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

_EXPORTS = {
    "EvalSettings": "eval.settings",
    "load_dataset": "eval.dataset",
    "DatasetError": "eval.dataset",
    "JudgeLLM": "eval.judge",
    "JudgeError": "eval.judge",
    "JudgeConfig": "eval.scoring",
    "Scorer": "eval.scoring",
    "build_scorer": "eval.scoring",
    "EvalRequest": "eval.jobs",
    "prepare_run": "eval.jobs",
    "execute_run": "eval.runner",
    "write_report": "eval.report",
    "render_report": "eval.report",
    "compare_runs": "eval.compare",
    "pair_configs": "eval.compare",
    "ALL_METRICS": "eval.settings",
    "JUDGED_METRICS": "eval.settings",
    "EvalSample": "eval.records",
    "MetricScore": "eval.records",
    "RunSummary": "eval.records",
    "SampleTrace": "eval.records",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(module), name)
