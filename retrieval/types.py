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
    """A span of a document the embedder reads whole; ``start``/``end`` are character offsets into
    :attr:`Document.text` (citations point at them)."""

    id: str
    document_id: str
    index: int
    text: str
    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Section:
    """Consecutive chunks of one document scored as one retrieval unit (one point in Qdrant): BM25 over its
    whole text, dense similarity of its best chunk. A document up to ``section_tokens`` long is one section.

    ``metadata`` is the document's; a chunk's adds what is its own (a PDF chunk's ``page``).
    """

    id: str
    document_id: str
    index: int
    text: str
    start: int
    end: int
    chunks: tuple[Chunk, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    def payload(self, version: str, seq: int) -> dict[str, Any]:
        """What the engine stores with the vectors (metadata under ``meta`` so it cannot clash).

        ``version`` identifies the document's content (all sections of one ingest share it) and ``seq`` the
        write that stored it, so a reader can tell versions apart and a store can hide unfinished writes.
        """
        payload = {
            "document_id": self.document_id,
            "section": self.index,
            "lead": self.index == 0,
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "chunks": [[c.id, c.start, c.end] for c in self.chunks],
            "n_chunks": len(self.chunks),
            "chunk0": self.chunks[0].index if self.chunks else 0,
            "version": version,
            "seq": seq,
            "meta": self.metadata,
        }
        pages = [c.metadata.get("page") for c in self.chunks]
        if any(p is not None for p in pages):
            payload["pages"] = pages
        return payload

    @classmethod
    def from_payload(cls, section_id: str, payload: dict[str, Any]) -> Section:
        document_id = str(payload["document_id"])
        start, text = int(payload["start"]), str(payload["text"])
        meta = dict(payload.get("meta") or {})
        refs = payload.get("chunks") or []
        pages = payload.get("pages") or [None] * len(refs)
        first = int(payload.get("chunk0", 0))
        chunks = tuple(
            Chunk(
                id=str(cid),
                document_id=document_id,
                index=first + i,
                text=text[int(s) - start : int(e) - start],
                start=int(s),
                end=int(e),
                metadata=meta if page is None else {**meta, "page": page},
            )
            for i, ((cid, s, e), page) in enumerate(zip(refs, pages, strict=True))
        )
        return cls(
            id=section_id,
            document_id=document_id,
            index=int(payload.get("section", 0)),
            text=text,
            start=start,
            end=int(payload["end"]),
            chunks=chunks,
            metadata=meta,
        )


@dataclass
class Hit:
    """A search result: the section that matched, the chunk within it that matched best (what a citation shows),
    and the score of every stage it went through (``dense``, ``bm25``, ``fused``, ``rerank``)."""

    chunk: Chunk
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    section_id: str = ""


@dataclass(frozen=True)
class IngestReport:
    """What an ingest changed, counted in chunks."""

    documents: int
    chunks_added: int
    chunks_unchanged: int
    chunks_removed: int
    seconds: float
