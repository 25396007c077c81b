"""Retrieval settings (``RAGSWAP_RETRIEVAL__*``). Owned by the retrieval package.

Defaults were chosen by measurement on the judged training queries of two BEIR datasets (SciFact, NFCorpus) and
reported on queries that chose nothing (docs/retrieval.md has the figures and the command that produced them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

ChunkerName = Literal["fixed", "recursive", "semantic"]
SearchMode = Literal["dense", "bm25", "hybrid"]
FusionName = Literal["rrf", "weighted", "dbsf"]
EmbeddingPrecision = Literal["float32", "int8"]
GroupBy = Literal["document", "section"]
PayloadIndexType = Literal["keyword", "integer", "float", "bool"]


class ChunkingSettings(BaseModel):
    """How documents are cut: chunks (what the embedder reads) inside sections (what BM25 and ranking score).

    Sizes are in tokens of the embedding model's tokenizer.
    """

    model_config = ConfigDict(extra="forbid")

    chunker: ChunkerName = "recursive"
    """``fixed`` token windows with overlap, ``recursive`` headings → paragraphs → sentences, or ``semantic``."""
    chunk_size: int = Field(default=256, ge=16, le=8192)
    """Tokens per chunk; capped at the embedder's max sequence length minus its two special tokens (254 for
    all-MiniLM-L6-v2), so a document that fits the embedder's window is never split."""
    chunk_overlap: int = Field(default=32, ge=0)
    """Tokens shared by consecutive ``fixed`` windows."""
    semantic_percentile: float = Field(default=20.0, gt=0, lt=100)
    """``semantic``: break where adjacent-sentence similarity falls below this percentile of the document's."""
    section_tokens: int = Field(default=1024, ge=16, le=65536)
    """A document of up to this many tokens is one retrieval unit: BM25 scores its whole text and its dense score
    is its best chunk's. Longer documents are cut into sections of about this size (at chunk boundaries), each
    a unit of its own, so a 300-page manual does not rank as one bag of words."""

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self


class Bm25Settings(BaseModel):
    """Okapi BM25 as Qdrant computes it: Qdrant Edge's ``Bm25`` embedder weighs each document's terms
    (``tf·(k1+1) / (tf + k1·(1-b+b·len/avg_len))``, Snowball stemmer and stopwords of ``language``) and the
    engine multiplies the IDF of the collection (``Modifier.Idf``)."""

    model_config = ConfigDict(extra="forbid")

    k1: float = Field(default=1.2, gt=0)
    b: float = Field(default=0.75, ge=0, le=1)
    avg_len: float | None = Field(default=None, gt=0)
    """Mean terms per section; ``None`` = measured on the first documents ingested into the collection (and
    kept, so every later document is weighed alike)."""
    language: str = "english"
    """Stemmer and stopword language of Qdrant's BM25 tokenizer."""


class SearchSettings(BaseModel):
    """Defaults of ``/v1/retrieve``, RAG chat and ``ragswap search``: a request's own value wins, then the settings
    ``collections tune`` stored with the collection, then these."""

    model_config = ConfigDict(extra="forbid")

    mode: SearchMode = "hybrid"
    fusion: FusionName = "dbsf"
    """``dbsf`` (each candidate list scaled by its mean ± 3σ, then summed), ``rrf`` (``Σ w/(k + rank)``), or
    ``weighted`` (RRF with weights ``(1-weight, weight)`` for dense and BM25)."""
    rrf_k: int = Field(default=60, ge=1)
    """RRF constant: ``score = Σ 1 / (k + rank)``."""
    weight: float = Field(default=0.5, ge=0, le=1)
    """``weighted`` fusion: the BM25 list's share of the RRF weights (0.5 = plain RRF)."""
    candidates: int = Field(default=100, ge=1, le=1000)
    """Candidates each retriever contributes before fusion and reranking (the first stage's k)."""
    top_k: int = Field(default=5, ge=1, le=1000)
    """Results returned (the second stage's k)."""
    group_by: GroupBy = "document"
    """``document``: one hit per document (its best section, with its best chunk's text and offsets);
    ``section``: every matching section of long documents separately (RAG over a few long manuals)."""
    rerank: bool | None = None
    """Rerank with the cross-encoder; ``None`` = whenever a reranker is configured."""
    rerank_depth: int = Field(default=30, ge=1, le=1000)
    """First-stage candidates the cross-encoder rescores (its cost grows linearly with this)."""
    rerank_weight: float | None = Field(default=None, ge=0, le=1)
    """Final score of reranked candidates: ``w·minmax(rerank) + (1-w)·minmax(first stage)``; 1 = the
    cross-encoder's order alone. ``None`` = the weight the reranker's training recorded as best on held-apart
    queries (``recommended_rerank_weight`` in its ``ragswap-retriever.json``), else 1."""


class RagSettings(BaseModel):
    """Retrieval-augmented chat."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(default=4, ge=1, le=50)
    """Passages put in the prompt."""
    group_by: GroupBy = "section"
    """Passages per document: ``section`` lets a long manual contribute several passages."""
    history_turns: int = Field(default=0, ge=0)
    """Earlier user turns added to the retrieval query (0 = last user turn only)."""
    min_score: float = Field(default=0.25)
    """Below this dense cosine similarity (or reranker score when reranking) a passage counts as irrelevant;
    with none left the prompt tells the model to say it does not know."""
    max_passage_chars: int = Field(default=1500, ge=100)


class EmbeddedSettings(BaseModel):
    """The embedded store (Qdrant Edge in this process)."""

    model_config = ConfigDict(extra="forbid")

    index_threshold: int = Field(default=20_000, ge=0)
    """Build the HNSW index (Edge's optimizer, run at the end of an ingest) once a collection holds this many
    points not yet indexed; below it searches scan exactly (under 2 ms at 20k points). The optimizer holds
    Python's GIL while it runs, pausing the process for its duration (docs/retrieval.md has the figures);
    0 = never index."""


class RetrievalSettings(BaseModel):
    """Qdrant storage, chunking, fusion and reranking defaults."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = None
    """Embedded storage: one Qdrant Edge shard per collection; ``None`` = ``<server.state_dir>/collections``.
    One process at a time may open it (its lock is held while the store is open)."""
    url: str | None = None
    """A Qdrant server or cluster (``http://host:6333``); when set, ``path`` is not used. ``:memory:`` runs
    qdrant-client's in-process local mode instead (a stand-in for tests: not durable, not shared)."""
    api_key: SecretStr | None = None
    shard_number: int = Field(default=1, ge=1)
    """Qdrant server: shards of each new collection."""
    replication_factor: int = Field(default=1, ge=1)
    """Qdrant server: copies of each shard."""
    write_consistency_factor: int = Field(default=1, ge=1)
    """Qdrant server: replicas that must acknowledge a write before it succeeds."""
    timeout_s: float = Field(default=60.0, gt=0)
    """Qdrant server: request timeout."""
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
    query_threads: int = Field(default=1, ge=0)
    """Intra-op threads of the query encoder (0 = torch's default). One keeps a query's embedding from
    competing with an engine's OpenMP threads on the same cores (its p95 latency triples otherwise)."""
    max_upload_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Largest file ``POST /v1/collections/{c}/documents`` accepts (413 above)."""
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    bm25: Bm25Settings = Field(default_factory=Bm25Settings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    rag: RagSettings = Field(default_factory=RagSettings)
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)

    def storage_path(self, state_dir: Path) -> Path:
        """Where the embedded store lives for a given ``server.state_dir``."""
        return (self.path or state_dir / "collections").expanduser()
