"""Hybrid retrieval: ingestion and chunking, BM25 + dense search on Qdrant, fusion, reranking, RAG prompts.

Imports are lazy so that ``ragswap --help`` does not load torch or qdrant-client.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Chunk",
    "CollectionSpec",
    "Document",
    "Hit",
    "IngestReport",
    "MetadataFilter",
    "RetrievalService",
    "RetrievalSettings",
    "SearchQuery",
    "parse_filter",
]

_WHERE = {
    "Chunk": "retrieval.types",
    "Document": "retrieval.types",
    "Hit": "retrieval.types",
    "IngestReport": "retrieval.types",
    "CollectionSpec": "retrieval.store.base",
    "MetadataFilter": "retrieval.filters",
    "parse_filter": "retrieval.filters",
    "RetrievalService": "retrieval.service",
    "RetrievalSettings": "retrieval.settings",
    "SearchQuery": "retrieval.search",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(name)
