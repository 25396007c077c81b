"""Retrieval settings (``RAGSWAP_RETRIEVAL__*``). Owned by the retrieval package."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

ChunkerName = Literal["fixed", "recursive", "semantic"]
SearchMode = Literal["dense", "bm25", "hybrid"]
FusionName = Literal["rrf", "weighted", "dbsf"]
EmbeddingPrecision = Literal["float32", "int8"]


class ChunkingSettings(BaseModel):
    """How documents are cut into chunks; sizes are in tokens of the embedding model's tokenizer."""

    chunker: ChunkerName = "recursive"
    """``fixed`` token windows with overlap, ``recursive`` headings → paragraphs → sentences, or ``semantic``."""
    chunk_size: int = Field(default=256, ge=16, le=8192)
    """Tokens per chunk; capped at the embedder's max sequence length (256 for MiniLM) minus special tokens."""
    chunk_overlap: int = Field(default=32, ge=0)
    """Tokens shared by consecutive ``fixed`` windows."""
    semantic_percentile: float = Field(default=20.0, gt=0, lt=100)
    """``semantic``: break where adjacent-sentence similarity falls below this percentile of the document's."""

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self


class Bm25Settings(BaseModel):
    """Okapi BM25 parameters (bm25s, English Snowball stemmer and stopwords)."""

    k1: float = Field(default=1.5, gt=0)
    b: float = Field(default=0.75, ge=0, le=1)


class SearchSettings(BaseModel):
    """Defaults of ``/v1/retrieve`` and ``ragswap search``; every one can be overridden per request."""

    mode: SearchMode = "hybrid"
    fusion: FusionName = "rrf"
    rrf_k: int = Field(default=60, ge=1)
    """RRF constant: ``score = Σ 1 / (k + rank)``."""
    weight: float = Field(default=0.3, ge=0, le=1)
    """Weighted fusion: ``(1-w)·minmax(dense) + w·minmax(bm25)``."""
    candidates: int = Field(default=100, ge=1, le=1000)
    """Candidates each retriever contributes before fusion and reranking (the first stage's k)."""
    top_k: int = Field(default=5, ge=1, le=1000)
    """Results returned (the second stage's k)."""
    rerank: bool | None = None
    """Rerank with the cross-encoder; ``None`` = whenever a reranker is configured."""
    rerank_depth: int = Field(default=30, ge=1, le=1000)
    """First-stage candidates the cross-encoder rescores (its cost grows linearly with this)."""
    rerank_weight: float | None = Field(default=None, ge=0, le=1)
    """Final score of reranked candidates: ``w·minmax(rerank) + (1-w)·minmax(first stage)``; 1 = the
    cross-encoder's order alone. ``None`` = the weight the reranker's training recorded as best on held-apart
    queries (``recommended_rerank_weight`` in its ``ragswap-retriever.json``), else 1. A small domain-trained
    reranker ranks best blended with the fused score."""


class RagSettings(BaseModel):
    """Retrieval-augmented chat."""

    top_k: int = Field(default=4, ge=1, le=50)
    """Passages put in the prompt."""
    history_turns: int = Field(default=0, ge=0)
    """Earlier user turns added to the retrieval query (0 = last user turn only)."""
    min_score: float = Field(default=0.25)
    """Below this dense cosine similarity (or reranker score when reranking) a passage counts as irrelevant;
    with none left the prompt tells the model to say it does not know."""
    max_passage_chars: int = Field(default=1500, ge=100)


class RetrievalSettings(BaseModel):
    """Qdrant storage, chunking, fusion and reranking defaults."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = None
    """Embedded storage (Qdrant local mode plus the in-process BM25 and dense caches); ``None`` =
    ``<server.state_dir>/collections``. One process at a time may open it (Qdrant local mode locks it)."""
    url: str | None = None
    """A Qdrant server or cluster (``http://host:6333``); when set, ``path`` is not used."""
    api_key: SecretStr | None = None
    shard_number: int = Field(default=1, ge=1)
    """Qdrant server: shards of each new collection."""
    replication_factor: int = Field(default=1, ge=1)
    """Qdrant server: copies of each shard."""
    embedding_model: str | None = None
    """Default embedder of new collections (catalog name or path); ``None`` = ``models.embedding_model``."""
    embedding_precision: EmbeddingPrecision = "float32"
    """Default precision of new collections' embedder. ``int8`` quantizes its linear layers (weights per channel,
    activations per batch) for CPU: about 2× faster ingestion and queries for the same ranking quality on SciFact
    (see docs/retrieval.md). A collection keeps the precision it was created with."""
    reranker: str | None = None
    """A sentence-transformers CrossEncoder directory (e.g. trained by ``training.train_reranker``)."""
    batch_size: int = Field(default=64, ge=1)
    """Chunks encoded per batch during ingestion."""
    max_upload_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Largest file ``POST /v1/collections/{c}/documents`` accepts (413 above)."""
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    bm25: Bm25Settings = Field(default_factory=Bm25Settings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    rag: RagSettings = Field(default_factory=RagSettings)

    def storage_path(self, state_dir: Path) -> Path:
        """Where the embedded store lives for a given ``server.state_dir``."""
        return (self.path or state_dir / "collections").expanduser()
