"""Chunkers: fixed token windows, recursive (headings → paragraphs → sentences) and semantic.

All three work on character spans of the document so every chunk keeps exact offsets (citations point at them),
and measure size in tokens of the embedding model's own tokenizer, so no chunk is silently truncated by the
embedder (all-MiniLM-L6-v2 reads 256 word pieces).
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from retrieval.settings import ChunkingSettings
from retrieval.types import Chunk, Document

Span = tuple[int, int]
_NAMESPACE = uuid.UUID("5b0c8c8e-7a52-4a8e-9d0c-2f1f3d4c6a10")
_HEADING = re.compile(r"(?m)^(?=#{1,6}\s)")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_SENTENCE = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_LEVELS = (_HEADING, _PARAGRAPH, _SENTENCE)


class Tokenizer(Protocol):
    """The part of a Hugging Face fast tokenizer the chunkers use."""

    def __call__(self, text: str, **kwargs: Any) -> Any: ...


def chunk_id(document_id: str, start: int, text: str, metadata: dict[str, Any] | None = None) -> str:
    """Deterministic id from the document id, position, content and metadata: re-ingesting the same document
    is a no-op, while changed text or metadata gives new ids (so the chunk is rewritten)."""
    meta = json.dumps(metadata or {}, sort_keys=True, default=str)
    return str(uuid.uuid5(_NAMESPACE, f"{document_id}\x00{start}\x00{text}\x00{meta}"))


class TokenMeter:
    """Counts tokens and maps token positions back to characters with the embedder's tokenizer."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def offsets(self, text: str) -> list[Span]:
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [(int(s), int(e)) for s, e in encoded["offset_mapping"]]


def _trim(text: str, span: Span) -> Span | None:
    s, e = span
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return (s, e) if e > s else None


def fixed_spans(
    text: str, meter: TokenMeter, size: int, overlap: int, span: Span | None = None
) -> list[Span]:
    """Windows of ``size`` tokens, consecutive windows sharing ``overlap`` tokens."""
    s0, e0 = span or (0, len(text))
    offsets = [(s + s0, e + s0) for s, e in meter.offsets(text[s0:e0]) if e > s]
    if not offsets:
        return []
    step = max(1, size - overlap)
    spans: list[Span] = []
    for i in range(0, len(offsets), step):
        window = offsets[i : i + size]
        spans.append((window[0][0], window[-1][1]))
        if i + size >= len(offsets):
            break
    return spans


def _split_at(pattern: re.Pattern[str], text: str, span: Span) -> list[Span]:
    s0, e0 = span
    cuts = [s0]
    for m in pattern.finditer(text, s0, e0):
        if s0 < m.end() < e0:
            cuts.append(m.end())
    cuts.append(e0)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def recursive_spans(text: str, meter: TokenMeter, size: int, overlap: int) -> list[Span]:
    """Split on headings, then paragraphs, then sentences, merging neighbours up to ``size`` tokens."""

    def fits(span: Span) -> bool:
        return meter.count(text[span[0] : span[1]]) <= size

    def go(span: Span, level: int) -> list[Span]:
        if fits(span):
            return [span]
        if level >= len(_LEVELS):
            return fixed_spans(text, meter, size, overlap, span)
        parts = _split_at(_LEVELS[level], text, span)
        if len(parts) <= 1:
            return go(span, level + 1)
        out: list[Span] = []
        current: Span | None = None
        for part in parts:
            if not fits(part):
                if current:
                    out.append(current)
                    current = None
                out.extend(go(part, level + 1))
            elif current and fits((current[0], part[1])):
                current = (current[0], part[1])
            else:
                if current:
                    out.append(current)
                current = part
        if current:
            out.append(current)
        return out

    return go((0, len(text)), 0)


def semantic_spans(
    text: str,
    meter: TokenMeter,
    size: int,
    overlap: int,
    embed: Callable[[list[str]], np.ndarray],
    percentile: float,
) -> list[Span]:
    """Group consecutive sentences, breaking where the next sentence's meaning drifts (low cosine similarity)."""
    sentences: list[Span] = []
    for para in _split_at(_PARAGRAPH, text, (0, len(text))):
        for sent in _split_at(_SENTENCE, text, para):
            trimmed = _trim(text, sent)
            if trimmed is None:
                continue
            if meter.count(text[trimmed[0] : trimmed[1]]) > size:
                sentences.extend(fixed_spans(text, meter, size, overlap, trimmed))
            else:
                sentences.append(trimmed)
    if len(sentences) <= 1:
        return sentences
    vectors = embed([text[s:e] for s, e in sentences])
    sims = np.sum(vectors[:-1] * vectors[1:], axis=1)
    threshold = float(np.percentile(sims, percentile))
    out: list[Span] = []
    current = sentences[0]
    for i, sent in enumerate(sentences[1:]):
        merged = (current[0], sent[1])
        if sims[i] >= threshold and meter.count(text[merged[0] : merged[1]]) <= size:
            current = merged
        else:
            out.append(current)
            current = sent
    out.append(current)
    return out


class Chunker:
    """Turns documents into chunks according to :class:`ChunkingSettings`."""

    def __init__(
        self,
        settings: ChunkingSettings,
        meter: TokenMeter,
        max_tokens: int,
        embed: Callable[[list[str]], np.ndarray] | None = None,
    ) -> None:
        self.settings = settings
        self.meter = meter
        # Room for [CLS]/[SEP]; the embedder would silently cut anything longer.
        self.size = min(settings.chunk_size, max_tokens - 2)
        self.overlap = min(settings.chunk_overlap, self.size // 2)
        self.embed = embed

    def spans(self, text: str) -> list[Span]:
        name = self.settings.chunker
        if name == "fixed":
            raw = fixed_spans(text, self.meter, self.size, self.overlap)
        elif name == "semantic":
            if self.embed is None:
                raise ValueError("the semantic chunker needs an embedding function")
            raw = semantic_spans(
                text, self.meter, self.size, self.overlap, self.embed, self.settings.semantic_percentile
            )
        else:
            raw = recursive_spans(text, self.meter, self.size, self.overlap)
        return [t for t in (_trim(text, s) for s in raw) if t is not None]

    def chunk(self, document: Document) -> list[Chunk]:
        meta = {k: v for k, v in document.metadata.items() if k != "page_starts"}
        page_starts: Sequence[int] = document.metadata.get("page_starts") or []
        chunks = []
        for index, (s, e) in enumerate(self.spans(document.text)):
            text = document.text[s:e]
            chunk_meta = dict(meta)
            if page_starts:
                chunk_meta["page"] = sum(1 for p in page_starts if p <= s)
            chunks.append(
                Chunk(
                    id=chunk_id(document.id, s, text, chunk_meta),
                    document_id=document.id,
                    index=index,
                    text=text,
                    start=s,
                    end=e,
                    metadata=chunk_meta,
                )
            )
        return chunks
