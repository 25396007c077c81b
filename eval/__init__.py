"""RAG evaluation: RAGAS metrics with a structured-output judge, IR metrics, offline runs, reports, API jobs.

Public API (imported lazily so that ``ragswap --help`` does not import ragas):

- :class:`EvalSettings` — the ``eval`` settings section.
- :func:`load_dataset`, :class:`DatasetError` — JSONL datasets (ragswap rows or ragas ``EvaluationDataset``).
- :class:`JudgeLLM`, :class:`JudgeConfig` — the judge; :func:`build_scorer`, :class:`Scorer` — metrics.
- :class:`EvalRequest`, :func:`prepare_run`, :func:`execute_run` — runs into a run directory.
- :func:`write_report` — the HTML report.
- Judge calibration: :func:`run_judge_check`, :class:`JudgeCheck`, :class:`MetricAgreement`.
- Paired comparisons: :func:`compare_runs`, :func:`compare_configs`, :func:`paired_delta`, :class:`Comparison`,
  :class:`PairedDelta`.
- CI gates: :func:`evaluate_gate`, :func:`assert_gate`, :class:`GateOptions`, :class:`GateResult`,
  :class:`GateFailedError`, :class:`GateError`, :class:`Requirement`.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# ragas sends a blocking telemetry POST per LLM call unless told not to; it must be set before ragas is imported,
# and every ragas import in ragswap goes through this package.
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

_EXPORTS = {
    "ALL_METRICS": "eval.settings",
    "JUDGED_METRICS": "eval.settings",
    "EvalSettings": "eval.settings",
    "load_dataset": "eval.dataset",
    "parse_rows": "eval.dataset",
    "DatasetError": "eval.dataset",
    "JudgeLLM": "eval.judge",
    "JudgeError": "eval.judge",
    "JudgeConfig": "eval.scoring",
    "Scorer": "eval.scoring",
    "build_scorer": "eval.scoring",
    "EvalRequest": "eval.jobs",
    "prepare_run": "eval.jobs",
    "RetrievalMode": "eval.jobs",
    "cli_app": "eval.cli",
    "execute_run": "eval.runner",
    "TraceSink": "eval.runner",
    "Pace": "eval.runner",
    "TRAFFIC_HEADER": "eval.platform",
    "RunSpec": "eval.runner",
    "render_report": "eval.report",
    "write_report": "eval.report",
    "compare_runs": "eval.compare",
    "compare_configs": "eval.paired",
    "paired_delta": "eval.paired",
    "run_judge_check": "eval.calibration",
    "load_calibration_set": "eval.calibration",
    "evaluate_gate": "eval.gate",
    "assert_gate": "eval.gate",
    "GateOptions": "eval.gate",
    "GateResult": "eval.gate",
    "GateCheck": "eval.gate",
    "GateFailedError": "eval.gate",
    "GateError": "eval.gate",
    "Requirement": "eval.gate",
    "bootstrap_ci": "eval.stats",
    "average_precision": "eval.metrics.ir",
    "dedupe_ranked": "eval.metrics.ir",
    "mrr": "eval.metrics.ir",
    "ndcg_at_k": "eval.metrics.ir",
    "rank_metrics": "eval.metrics.ir",
    "recall_at_k": "eval.metrics.ir",
    "pair_configs": "eval.compare",
    "EvalSample": "eval.records",
    "MetricScore": "eval.records",
    "RunSummary": "eval.records",
    "SampleTrace": "eval.records",
    "Comparison": "eval.records",
    "PairedDelta": "eval.records",
    "JudgeCheck": "eval.records",
    "MetricAgreement": "eval.records",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(module), name)
