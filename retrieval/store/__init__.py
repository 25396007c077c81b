"""Storage backends behind one Protocol: the embedded Qdrant Edge store and a Qdrant server or cluster.
:func:`open_store` picks by ``retrieval.url``."""

from retrieval.store.base import (
    ChunkStore,
    CollectionSpec,
    PointData,
    QueryResult,
    SearchOverrides,
    StoredHit,
    StoredSection,
    StoreQuery,
    open_store,
)

__all__ = [
    "ChunkStore",
    "CollectionSpec",
    "PointData",
    "QueryResult",
    "SearchOverrides",
    "StoreQuery",
    "StoredHit",
    "StoredSection",
    "open_store",
]
