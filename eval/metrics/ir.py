"""Ranking metrics over retrieved ids against reference (relevant) ids: the one IR-metrics module of ragswap,
used by evaluation runs, retriever training, ``collections tune`` and the benchmarks.

``relevant`` is either a collection of ids (binary relevance) or a mapping id → grade (graded relevance, as in
BEIR's qrels; grades ``<= 0`` count as not relevant). nDCG uses the grade as the gain (``Σ grade / log2(rank+1)``,
as pytrec_eval's ``ndcg_cut`` and so BEIR's published figures); recall, MRR and MAP count any positive grade.

Retrieval may return several chunks of one document: callers pass ids already mapped to the granularity of the
reference ids and deduplicated (:func:`dedupe_ranked`), so a document counts once, at its best rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Relevance = Iterable[str] | Mapping[str, float]


def dedupe_ranked(ids: Iterable[str]) -> list[str]:
    """Keep each id at its first (best) rank."""
    seen: set[str] = set()
    out: list[str] = []
    for item in ids:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _grades(relevant: Relevance, metric: str) -> dict[str, float]:
    if isinstance(relevant, Mapping):
        grades = {str(k): float(v) for k, v in relevant.items() if float(v) > 0}
    else:
        grades = dict.fromkeys(relevant, 1.0)
    if not grades:
        raise ValueError(f"{metric} needs at least one relevant id")
    return grades


def ndcg_at_k(retrieved: Sequence[str], relevant: Relevance, k: int) -> float:
    """Normalised discounted cumulative gain at ``k`` (gain = grade, 1 for binary relevance; log2 discount)."""
    grades = _grades(relevant, "nDCG")
    dcg = sum(grades.get(item, 0.0) / math.log2(rank + 2) for rank, item in enumerate(retrieved[:k]))
    ideal = sum(g / math.log2(rank + 2) for rank, g in enumerate(sorted(grades.values(), reverse=True)[:k]))
    return dcg / ideal


def recall_at_k(retrieved: Sequence[str], relevant: Relevance, k: int) -> float:
    """Share of relevant ids found in the top ``k``."""
    rel = _grades(relevant, "recall")
    return len(rel.keys() & set(retrieved[:k])) / len(rel)


def mrr(retrieved: Sequence[str], relevant: Relevance, k: int | None = None) -> float:
    """Reciprocal rank of the first relevant id within the top ``k`` (all when ``None``); 0 when none."""
    rel = _grades(relevant, "MRR")
    for rank, item in enumerate(retrieved if k is None else retrieved[:k]):
        if item in rel:
            return 1.0 / (rank + 1)
    return 0.0


def average_precision(retrieved: Sequence[str], relevant: Relevance, k: int | None = None) -> float:
    """Mean of the precision at each relevant id's rank (within the top ``k``), over all relevant ids: MAP's
    per-query term."""
    rel = _grades(relevant, "MAP")
    hits, total = 0, 0.0
    for rank, item in enumerate(retrieved if k is None else retrieved[:k], start=1):
        if item in rel:
            hits += 1
            total += hits / rank
    return total / (len(rel) if k is None else min(len(rel), k))


def id_context_precision(retrieved: Sequence[str], relevant: Iterable[str]) -> float:
    """RAGAS ``IDBasedContextPrecision``: share of retrieved ids that are relevant."""
    if not retrieved:
        raise ValueError("context precision needs at least one retrieved id")
    rel = set(relevant)
    return sum(1 for item in retrieved if item in rel) / len(retrieved)


def id_context_recall(retrieved: Sequence[str], relevant: Iterable[str]) -> float:
    """RAGAS ``IDBasedContextRecall``: share of relevant ids that were retrieved."""
    rel = set(relevant)
    if not rel:
        raise ValueError("context recall needs at least one reference id")
    return len(rel.intersection(retrieved)) / len(rel)


def rank_metrics(retrieved: Sequence[str], relevant: Relevance) -> dict[str, float]:
    """The figures retrieval reports per query: nDCG@10, recall@100, MRR@10 and MAP@100."""
    return {
        "ndcg@10": ndcg_at_k(retrieved, relevant, 10),
        "recall@100": recall_at_k(retrieved, relevant, 100),
        "mrr@10": mrr(retrieved, relevant, 10),
        "map@100": average_precision(retrieved, relevant, 100),
    }
