"""Retrieval settings (``RAGSWAP_RETRIEVAL__*``). Owned by the retrieval package."""

from __future__ import annotations

from pydantic import BaseModel


class RetrievalSettings(BaseModel):
    """Qdrant storage, chunking, fusion and reranking defaults."""
