"""Blending the cross-encoder's scores with the first stage's (fusion of the retrievers runs in the engine:
Qdrant's RRF and DBSF over the query's prefetches)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)


def _minmax(scores: Mapping[K, float]) -> dict[K, float]:
    if not scores:
        return {}
    values = np.fromiter(scores.values(), dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    return {key: (s - lo) / span if span > 0 else 1.0 for key, s in scores.items()}


def blend(rerank: Mapping[K, float], first_stage: Mapping[K, float], weight: float) -> dict[K, float]:
    """Reranked candidates' final score: ``w·minmax(rerank) + (1-w)·minmax(first stage)``.

    With ``w = 1`` this is the cross-encoder's order (its raw score is kept, so thresholds on it still hold).
    """
    if weight >= 1.0:
        return dict(rerank)
    r, f = _minmax(rerank), _minmax(first_stage)
    return {key: weight * r[key] + (1 - weight) * f.get(key, 0.0) for key in r}
