"""Value types shared by ingestion, storage and search."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One source document: plain text plus metadata that becomes filterable payload."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """A span of a document; ``start``/``end`` are character offsets into :attr:`Document.text`."""

    id: str
    document_id: str
    index: int
    text: str
    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """What Qdrant stores with the vector (metadata under ``meta`` so it cannot clash)."""
        return {
            "text": self.text,
            "document_id": self.document_id,
            "index": self.index,
            "start": self.start,
            "end": self.end,
            "meta": self.metadata,
        }

    @classmethod
    def from_payload(cls, chunk_id: str, payload: dict[str, Any]) -> Chunk:
        return cls(
            id=chunk_id,
            document_id=str(payload["document_id"]),
            index=int(payload["index"]),
            text=str(payload["text"]),
            start=int(payload["start"]),
            end=int(payload["end"]),
            metadata=dict(payload.get("meta") or {}),
        )


@dataclass
class Hit:
    """A search result with the score of every stage it went through (``dense``, ``bm25``, ``fused``, ``rerank``)."""

    chunk: Chunk
    score: float
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestReport:
    """What an ingest changed."""

    documents: int
    chunks_added: int
    chunks_unchanged: int
    chunks_removed: int
    seconds: float
