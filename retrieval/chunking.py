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
from retrieval.types import Chunk, Document, Section

Span = tuple[int, int]
_NAMESPACE = uuid.UUID("5b0c8c8e-7a52-4a8e-9d0c-2f1f3d4c6a10")
_SECTION_NAMESPACE = uuid.UUID("a4e1f0b2-3c5d-4e6f-8a9b-0c1d2e3f4a5b")
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


def section_id(document_id: str, chunk_ids: Sequence[str]) -> str:
    """Deterministic id of a section: its document and exactly its chunks (so their content and metadata)."""
    return str(uuid.uuid5(_SECTION_NAMESPACE, "\x00".join([document_id, *chunk_ids])))


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
    """Split on headings, then paragraphs, then sentences, merging neighbours up to ``size`` tokens.

    Headings are hard boundaries: sections are merged only whole. Inside a section that must be split, the pieces
    of every deeper level are packed greedily in order, so a short title or lead paragraph joins the sentences
    that follow it instead of becoming a chunk of its own. Packing aims at equal chunk sizes (a section of 300
    tokens becomes two chunks of ~150, not 254 + 46): a short tail chunk would be a weak unit for both the
    embedder and BM25.
    """

    def tokens(span: Span) -> int:
        return meter.count(text[span[0] : span[1]])

    def pieces(span: Span, level: int) -> list[Span]:
        """Spans no larger than ``size``: split at ``level`` and deeper, each piece recursively, unmerged."""
        if tokens(span) <= size:
            return [span]
        if level >= len(_LEVELS):
            return fixed_spans(text, meter, size, overlap, span)
        parts = _split_at(_LEVELS[level], text, span)
        if len(parts) <= 1:
            return pieces(span, level + 1)
        return [p for part in parts for p in pieces(part, level + 1)]

    def pack(units: list[Span], total: int) -> list[Span]:
        """Consecutive units merged greedily towards ``total / ceil(total / size)`` tokens per chunk."""
        target = total / max(1, -(-total // size))
        out: list[Span] = []
        current: Span | None = None
        for unit in units:
            if current is None:
                current = unit
                continue
            merged = (current[0], unit[1])
            if tokens(merged) <= size and tokens(current) < target:
                current = merged
            else:
                out.append(current)
                current = unit
        if current is not None:
            out.append(current)
        return out

    def section(span: Span) -> list[Span]:
        if tokens(span) <= size:
            return [span]
        units = pieces(span, 1)
        return pack(units, tokens(span))

    whole = (0, len(text))
    if tokens(whole) <= size:
        return [whole]
    sections = _split_at(_HEADING, text, whole)
    out: list[Span] = []
    current: Span | None = None
    for part in sections:
        if tokens(part) > size:
            if current:
                out.append(current)
                current = None
            out.extend(section(part))
        elif current and tokens((current[0], part[1])) <= size:
            current = (current[0], part[1])
        else:
            if current:
                out.append(current)
            current = part
    if current:
        out.append(current)
    return out


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

    def sections(self, document: Document) -> list[Section]:
        """The document's chunks grouped into sections of at most ``section_tokens`` (the whole document when
        it is that short); long documents are cut into sections of about equal size at chunk boundaries."""
        chunks = self.chunk(document)
        if not chunks:
            return []
        sizes = [self.meter.count(c.text) for c in chunks]
        limit = max(self.settings.section_tokens, self.size)
        total = sum(sizes)
        target = total / max(1, -(-total // limit))
        groups: list[list[int]] = [[]]
        tokens = 0
        for i, n in enumerate(sizes):
            if groups[-1] and (tokens + n > limit or tokens >= target):
                groups.append([])
                tokens = 0
            groups[-1].append(i)
            tokens += n
        sections = []
        for index, group in enumerate(groups):
            members = tuple(chunks[i] for i in group)
            start, end = members[0].start, max(c.end for c in members)
            metadata = {k: v for k, v in members[0].metadata.items() if k != "page"}
            sections.append(
                Section(
                    id=section_id(document.id, [c.id for c in members]),
                    document_id=document.id,
                    index=index,
                    text=document.text[start:end],
                    start=start,
                    end=end,
                    chunks=members,
                    metadata=metadata,
                )
            )
        return sections
