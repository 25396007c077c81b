"""A search request, independent of HTTP or CLI: the protocol layers convert into it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrieval.filters import MetadataFilter
from retrieval.settings import FusionName, SearchMode, SearchSettings


@dataclass(frozen=True)
class SearchQuery:
    """Everything one search needs; :meth:`from_settings` fills what the caller left out."""

    collection: str
    query: str
    mode: SearchMode = "hybrid"
    fusion: FusionName = "rrf"
    top_k: int = 5
    candidates: int = 100
    rrf_k: int = 60
    weight: float = 0.3
    rerank: bool | None = None
    rerank_depth: int = 30
    """Fused candidates the cross-encoder rescores."""
    rerank_weight: float | None = None
    """Share of the (min-max scaled) cross-encoder score in the final score; the rest is the first stage's.
    ``None``: the reranker's recommended weight."""
    filter: MetadataFilter | None = None
    vector: np.ndarray | None = None
    """The query's embedding when the caller already has it (batch evaluations); computed otherwise."""

    @classmethod
    def from_settings(
        cls,
        settings: SearchSettings,
        collection: str,
        query: str,
        *,
        mode: SearchMode | None = None,
        fusion: FusionName | None = None,
        top_k: int | None = None,
        candidates: int | None = None,
        rrf_k: int | None = None,
        weight: float | None = None,
        rerank: bool | None = None,
        rerank_depth: int | None = None,
        rerank_weight: float | None = None,
        filter: MetadataFilter | None = None,
        vector: np.ndarray | None = None,
    ) -> SearchQuery:
        return cls(
            collection=collection,
            query=query,
            mode=mode or settings.mode,
            fusion=fusion or settings.fusion,
            top_k=top_k or settings.top_k,
            candidates=candidates or settings.candidates,
            rrf_k=rrf_k or settings.rrf_k,
            weight=settings.weight if weight is None else weight,
            rerank=settings.rerank if rerank is None else rerank,
            rerank_depth=rerank_depth or settings.rerank_depth,
            rerank_weight=settings.rerank_weight if rerank_weight is None else rerank_weight,
            filter=filter,
            vector=vector,
        )
