"""Fusion of the dense and BM25 candidate lists. Each list maps chunk id → score, best first."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Scores = Mapping[str, float]


def rrf(lists: list[Scores], k: int = 60) -> dict[str, float]:
    """Reciprocal rank fusion: ``Σ 1/(k + rank)``; scale-free, so it needs no tuning beyond ``k``."""
    fused: dict[str, float] = {}
    for scores in lists:
        ranked = sorted(scores, key=lambda cid: scores[cid], reverse=True)
        for rank, cid in enumerate(ranked, start=1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (k + rank)
    return fused


def _minmax(scores: Scores) -> dict[str, float]:
    if not scores:
        return {}
    values = np.fromiter(scores.values(), dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    return {cid: (s - lo) / span if span > 0 else 1.0 for cid, s in scores.items()}


def weighted(dense: Scores, bm25: Scores, weight: float = 0.3) -> dict[str, float]:
    """``(1-w)·minmax(dense) + w·minmax(bm25)``; a candidate missing from one list gets 0 from it."""
    d, b = _minmax(dense), _minmax(bm25)
    return {cid: (1 - weight) * d.get(cid, 0.0) + weight * b.get(cid, 0.0) for cid in set(d) | set(b)}


def blend(rerank: Scores, first_stage: Scores, weight: float) -> dict[str, float]:
    """Reranked candidates' final score: ``w·minmax(rerank) + (1-w)·minmax(first stage)``.

    With ``w = 1`` this is the cross-encoder's order (its raw score is kept, so thresholds on it still hold).
    """
    if weight >= 1.0:
        return dict(rerank)
    r, f = _minmax(rerank), _minmax(first_stage)
    return {cid: weight * r[cid] + (1 - weight) * f.get(cid, 0.0) for cid in r}


def _distribution(scores: Scores) -> dict[str, float]:
    if not scores:
        return {}
    values = np.fromiter(scores.values(), dtype=np.float64)
    mean, std = float(values.mean()), float(values.std())
    lo, hi = mean - 3 * std, mean + 3 * std
    if hi <= lo:
        return dict.fromkeys(scores, 0.5)
    return {cid: min(1.0, max(0.0, (s - lo) / (hi - lo))) for cid, s in scores.items()}


def dbsf(lists: list[Scores]) -> dict[str, float]:
    """Distribution-based score fusion (as in Qdrant): each list scaled by mean ± 3σ, then summed."""
    fused: dict[str, float] = {}
    for scores in lists:
        for cid, s in _distribution(scores).items():
            fused[cid] = fused.get(cid, 0.0) + s
    return fused
