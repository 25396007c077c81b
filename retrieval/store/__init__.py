"""Chunk storage backends behind one Protocol: embedded (Qdrant local mode + in-process indexes) and a Qdrant
server or cluster. :func:`open_store` picks by ``retrieval.url``."""

from retrieval.store.base import ChunkStore, CollectionSpec, open_store

__all__ = ["ChunkStore", "CollectionSpec", "open_store"]
