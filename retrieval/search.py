"""A search request, independent of HTTP or CLI (the protocol layers convert into it), and its resolution.

Each option a request leaves out is taken from the settings ``collections tune`` stored with the collection,
then from the global search settings: :meth:`SearchQuery.resolve`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from retrieval.filters import MetadataFilter
from retrieval.settings import FusionName, GroupBy, SearchMode, SearchSettings
from retrieval.store import SearchOverrides


@dataclass(frozen=True)
class SearchQuery:
    """One search; ``None`` means "the collection's tuned value, else the default"."""

    collection: str
    query: str
    mode: SearchMode | None = None
    fusion: FusionName | None = None
    top_k: int | None = None
    candidates: int | None = None
    rrf_k: int | None = None
    weight: float | None = None
    group_by: GroupBy | None = None
    rerank: bool | None = None
    rerank_depth: int | None = None
    """Fused candidates the cross-encoder rescores."""
    rerank_weight: float | None = None
    """Share of the (min-max scaled) cross-encoder score in the final score; the rest is the first stage's.
    ``None``: the collection's tuned weight, else the reranker's recommended one."""
    filter: MetadataFilter | None = None
    vector: np.ndarray | None = None
    """The query's embedding when the caller already has it (batch evaluations); computed otherwise."""
    defaults: SearchSettings | None = None
    """Fallbacks after the collection's tuned settings (``None``: the service's ``retrieval.search``)."""

    @classmethod
    def from_settings(
        cls,
        settings: SearchSettings | None,
        collection: str,
        query: str,
        *,
        mode: SearchMode | None = None,
        fusion: FusionName | None = None,
        top_k: int | None = None,
        candidates: int | None = None,
        rrf_k: int | None = None,
        weight: float | None = None,
        group_by: GroupBy | None = None,
        rerank: bool | None = None,
        rerank_depth: int | None = None,
        rerank_weight: float | None = None,
        filter: MetadataFilter | None = None,
        vector: np.ndarray | None = None,
    ) -> SearchQuery:
        """A query whose unset options fall back to the collection's tuned settings, then to ``settings``."""
        return cls(
            collection=collection,
            query=query,
            mode=mode,
            fusion=fusion,
            top_k=top_k,
            candidates=candidates,
            rrf_k=rrf_k,
            weight=weight,
            group_by=group_by,
            rerank=rerank,
            rerank_depth=rerank_depth,
            rerank_weight=rerank_weight,
            filter=filter,
            vector=vector,
            defaults=settings,
        )

    def resolve(self, tuned: SearchOverrides, settings: SearchSettings) -> ResolvedQuery:
        """Every option concrete: the request's value, else the collection's tuned one, else the default."""
        base = self.defaults or settings
        values: dict[str, Any] = {}
        for f in fields(ResolvedQuery):
            if f.name in ("collection", "query"):
                continue
            own = getattr(self, f.name, None)
            if own is not None or f.name in ("filter", "vector", "rerank", "rerank_weight"):
                values[f.name] = own
            elif getattr(tuned, f.name, None) is not None:
                values[f.name] = getattr(tuned, f.name)
            else:
                values[f.name] = getattr(base, f.name)
        if values["rerank"] is None:
            values["rerank"] = base.rerank
        if values["rerank_weight"] is None:
            values["rerank_weight"] = (
                tuned.rerank_weight if tuned.rerank_weight is not None else base.rerank_weight
            )
        return ResolvedQuery(collection=self.collection, query=self.query, **values)


@dataclass(frozen=True)
class ResolvedQuery:
    """A :class:`SearchQuery` with every option decided (``rerank``/``rerank_weight`` may stay ``None``:
    "when a reranker is configured" / "its recommended weight")."""

    collection: str
    query: str
    mode: SearchMode
    fusion: FusionName
    top_k: int
    candidates: int
    rrf_k: int
    weight: float
    group_by: GroupBy
    rerank: bool | None
    rerank_depth: int
    rerank_weight: float | None
    filter: MetadataFilter | None
    vector: np.ndarray | None
