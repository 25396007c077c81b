"""Ranking metrics over retrieved ids against reference (relevant) ids, binary relevance.

Retrieval may return several chunks of one document: callers pass ids already mapped to the granularity of the
reference ids and deduplicated (:func:`dedupe_ranked`), so a document counts once, at its best rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def dedupe_ranked(ids: Iterable[str]) -> list[str]:
    """Keep each id at its first (best) rank."""
    seen: set[str] = set()
    out: list[str] = []
    for item in ids:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def ndcg_at_k(retrieved: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Normalised discounted cumulative gain at ``k`` (gain 1 per relevant id, log2 discount)."""
    rel = set(relevant)
    if not rel:
        raise ValueError("nDCG needs at least one relevant id")
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(retrieved[:k]) if item in rel)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(rel), k)))
    return dcg / ideal


def recall_at_k(retrieved: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Share of relevant ids found in the top ``k``."""
    rel = set(relevant)
    if not rel:
        raise ValueError("recall needs at least one relevant id")
    return len(rel.intersection(retrieved[:k])) / len(rel)


def mrr(retrieved: Sequence[str], relevant: Iterable[str]) -> float:
    """Reciprocal rank of the first relevant id (0 when none is retrieved)."""
    rel = set(relevant)
    if not rel:
        raise ValueError("MRR needs at least one relevant id")
    for rank, item in enumerate(retrieved):
        if item in rel:
            return 1.0 / (rank + 1)
    return 0.0


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
