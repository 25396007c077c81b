"""Grounded prompts: retrieve for a conversation, number the passages, and describe them as citations.

Kept free of HTTP so the CLI, the gateway and evaluations build the same prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from retrieval.search import SearchQuery
from retrieval.service import RetrievalService
from retrieval.settings import RagSettings
from retrieval.types import Hit

GROUNDED = (
    "Answer the user's question using only the numbered sources below. Cite the sources you use as [1], [2]. "
    "If the sources do not contain the answer, say that you don't know; do not invent facts.\n\nSources:\n{sources}"
)
NO_CONTEXT = (
    "No relevant information was found in the knowledge base for this question. Tell the user that you don't "
    "know the answer from the available sources; do not guess or invent facts."
)


@dataclass(frozen=True)
class Grounding:
    """The system prompt to add and the passages it cites (``source`` numbers start at 1)."""

    system_prompt: str
    hits: list[Hit]
    query: str

    def citations(self) -> list[dict[str, Any]]:
        return [
            {
                "source": n,
                "chunk_id": h.chunk.id,
                "document_id": h.chunk.document_id,
                "text": h.chunk.text,
                "start": h.chunk.start,
                "end": h.chunk.end,
                "score": h.score,
                "scores": h.scores,
                "metadata": h.chunk.metadata,
            }
            for n, h in enumerate(self.hits, start=1)
        ]


def _text(content: Any) -> str:
    """A message's text, whether a string or a list of OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def conversation_query(messages: list[dict[str, Any]], history_turns: int) -> str:
    """The last user turn, preceded by up to ``history_turns`` earlier user turns (for follow-up questions)."""
    turns = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    turns = [t for t in turns if t.strip()]
    return "\n".join(turns[-(history_turns + 1) :]) if turns else ""


def relevance(hit: Hit) -> float:
    """Reranker score when reranked, else dense cosine similarity (BM25 scores have no absolute scale)."""
    if "rerank" in hit.scores:
        return hit.scores["rerank"]
    return hit.scores.get("dense", hit.score)


def ground(
    service: RetrievalService,
    messages: list[dict[str, Any]],
    query: SearchQuery,
    settings: RagSettings,
    min_score: float | None = None,
) -> Grounding:
    """Search for the conversation and build the prompt; passages below ``min_score`` are dropped."""
    threshold = settings.min_score if min_score is None else min_score
    hits = [h for h in service.search(query) if relevance(h) >= threshold]
    if not hits:
        return Grounding(NO_CONTEXT, [], query.query)
    sources = "\n\n".join(
        f"[{n}] {h.chunk.text[: settings.max_passage_chars]}" for n, h in enumerate(hits, start=1)
    )
    return Grounding(GROUNDED.format(sources=sources), hits, query.query)


def grounded_messages(messages: list[dict[str, Any]], grounding: Grounding) -> list[dict[str, Any]]:
    """The conversation with the grounding merged into its system message (one system message: some chat
    templates accept no other)."""
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{_text(out[0].get('content'))}\n\n{grounding.system_prompt}".strip()
    else:
        out.insert(0, {"role": "system", "content": grounding.system_prompt})
    return out
