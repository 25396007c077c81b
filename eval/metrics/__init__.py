"""Metric implementations: IR and id-based (exact), answer-vs-reference (ROUGE-L, embeddings), RAGAS (judged)."""

from eval.metrics.answer import rouge_l
from eval.metrics.ir import (
    average_precision,
    dedupe_ranked,
    id_context_precision,
    id_context_recall,
    mrr,
    ndcg_at_k,
    rank_metrics,
    recall_at_k,
)

__all__ = [
    "average_precision",
    "dedupe_ranked",
    "id_context_precision",
    "id_context_recall",
    "mrr",
    "ndcg_at_k",
    "rank_metrics",
    "recall_at_k",
    "rouge_l",
]
