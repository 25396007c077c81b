"""Hybrid retrieval on Qdrant's engines: ingestion and chunking, BM25 + dense search fused in the engine (Qdrant Edge
in process, or a Qdrant server), reranking, per-collection tuning, RAG prompts with citations.

Other packages import only the names listed here. Imports are lazy so that ``ragswap --help`` does not load
torch or the Qdrant libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # real types for mypy; at run time the names load lazily
    from retrieval.beir import BeirData, load_beir, split_queries
    from retrieval.cli import cli_app
    from retrieval.errors import (
        CollectionExistsError,
        CollectionNotFoundError,
        InvalidDatasetError,
        InvalidDocumentError,
        InvalidFilterError,
        InvalidSearchError,
        RetrievalError,
        StoreBusyError,
        TuneRefusedError,
        UnsupportedFormatError,
    )
    from retrieval.filters import MetadataFilter, parse_filter
    from retrieval.fusion import blend
    from retrieval.loaders import content_id, iter_paths, load_bytes, load_path
    from retrieval.models import RETRIEVER_MANIFEST, load_reranker
    from retrieval.rag import Grounding, conversation_query, ground, grounded_messages
    from retrieval.search import SearchQuery
    from retrieval.service import CollectionInfo, RetrievalService
    from retrieval.settings import (
        Bm25Settings,
        ChunkingSettings,
        EmbeddedSettings,
        EmbeddingPrecision,
        FusionName,
        GroupBy,
        PayloadIndexType,
        RetrievalSettings,
        SearchMode,
        SearchSettings,
    )
    from retrieval.sparse import Bm25Encoder, Bm25Index, SparseVector
    from retrieval.store import CollectionSpec, SearchOverrides
    from retrieval.tune import TuneOptions, TuneReport, tune_collection
    from retrieval.types import Chunk, Document, Hit, IngestReport, Section

_WHERE = {
    # values
    "Chunk": "retrieval.types",
    "Document": "retrieval.types",
    "Hit": "retrieval.types",
    "IngestReport": "retrieval.types",
    "Section": "retrieval.types",
    # settings
    "Bm25Settings": "retrieval.settings",
    "ChunkingSettings": "retrieval.settings",
    "EmbeddedSettings": "retrieval.settings",
    "EmbeddingPrecision": "retrieval.settings",
    "FusionName": "retrieval.settings",
    "GroupBy": "retrieval.settings",
    "PayloadIndexType": "retrieval.settings",
    "RetrievalSettings": "retrieval.settings",
    "SearchMode": "retrieval.settings",
    "SearchSettings": "retrieval.settings",
    # service, search and storage
    "CollectionInfo": "retrieval.service",
    "RetrievalService": "retrieval.service",
    "SearchQuery": "retrieval.search",
    "CollectionSpec": "retrieval.store",
    "SearchOverrides": "retrieval.store",
    "MetadataFilter": "retrieval.filters",
    "parse_filter": "retrieval.filters",
    "blend": "retrieval.fusion",
    "Bm25Encoder": "retrieval.sparse",
    "Bm25Index": "retrieval.sparse",
    "SparseVector": "retrieval.sparse",
    # tuning and judged data
    "BeirData": "retrieval.beir",
    "load_beir": "retrieval.beir",
    "split_queries": "retrieval.beir",
    "TuneOptions": "retrieval.tune",
    "TuneReport": "retrieval.tune",
    "tune_collection": "retrieval.tune",
    # models
    "RETRIEVER_MANIFEST": "retrieval.models",
    "load_reranker": "retrieval.models",
    # loading files and grounding chats
    "content_id": "retrieval.loaders",
    "iter_paths": "retrieval.loaders",
    "load_bytes": "retrieval.loaders",
    "load_path": "retrieval.loaders",
    "Grounding": "retrieval.rag",
    "conversation_query": "retrieval.rag",
    "ground": "retrieval.rag",
    "grounded_messages": "retrieval.rag",
    # the package's commands (``ragswap.cli`` adds them to the root)
    "cli_app": "retrieval.cli",
    # errors
    "CollectionExistsError": "retrieval.errors",
    "CollectionNotFoundError": "retrieval.errors",
    "InvalidDatasetError": "retrieval.errors",
    "InvalidDocumentError": "retrieval.errors",
    "InvalidFilterError": "retrieval.errors",
    "InvalidSearchError": "retrieval.errors",
    "RetrievalError": "retrieval.errors",
    "StoreBusyError": "retrieval.errors",
    "TuneRefusedError": "retrieval.errors",
    "UnsupportedFormatError": "retrieval.errors",
}

__all__ = [
    "RETRIEVER_MANIFEST",
    "BeirData",
    "Bm25Encoder",
    "Bm25Index",
    "Bm25Settings",
    "Chunk",
    "ChunkingSettings",
    "CollectionExistsError",
    "CollectionInfo",
    "CollectionNotFoundError",
    "CollectionSpec",
    "Document",
    "EmbeddedSettings",
    "EmbeddingPrecision",
    "FusionName",
    "Grounding",
    "GroupBy",
    "Hit",
    "IngestReport",
    "InvalidDatasetError",
    "InvalidDocumentError",
    "InvalidFilterError",
    "InvalidSearchError",
    "MetadataFilter",
    "PayloadIndexType",
    "RetrievalError",
    "RetrievalService",
    "RetrievalSettings",
    "SearchMode",
    "SearchOverrides",
    "SearchQuery",
    "SearchSettings",
    "Section",
    "SparseVector",
    "StoreBusyError",
    "TuneOptions",
    "TuneRefusedError",
    "TuneReport",
    "UnsupportedFormatError",
    "blend",
    "cli_app",
    "content_id",
    "conversation_query",
    "ground",
    "grounded_messages",
    "iter_paths",
    "load_beir",
    "load_bytes",
    "load_path",
    "load_reranker",
    "parse_filter",
    "split_queries",
    "tune_collection",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(name)
