"""Per-chunk work of the gateway's stream relay, kept to what its features need.

A streamed completion is ~one SSE event per token. Parsing every event's JSON and serialising it again (to swap the
engine's LoRA name for the model the client asked for) costs more Python per token than everything else the
gateway does, and the gateway shares the machine's cores with the engine. :class:`ChunkRewriter` handles the
common event (a token chunk) on the text: the only change it needs is the ``model`` value, which vLLM writes as the
exact bytes ``"model":"<name>"`` (a raw ``"`` cannot occur inside a JSON string, so the first match is the
top-level key). Events that need more (the first one, for the ids the citation chunk reuses; the usage chunk, for
token accounting; error events; anything not in vLLM's usual shape) go through the full JSON path unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx

DONE = "[DONE]"


async def sse_payloads(resp: httpx.Response) -> AsyncIterator[str]:
    """The ``data:`` payloads of an SSE response, one per event, in order (other fields are ignored).

    Splits the decoded text on blank lines instead of going line by line through httpx's line decoder.
    """
    buffer = ""
    async for text in resp.aiter_text():
        buffer += text
        if "\r" in buffer:
            buffer = buffer.replace("\r\n", "\n")
        *events, buffer = buffer.split("\n\n")
        for event in events:
            payload = _data(event)
            if payload is not None:
                yield payload
    payload = _data(buffer)
    if payload is not None:
        yield payload


def _data(event: str) -> str | None:
    if event.startswith("data:") and "\n" not in event:
        return event[5:].strip()
    lines = [line[5:].strip() for line in event.split("\n") if line.startswith("data:")]
    return "\n".join(lines) if lines else None


class ChunkRewriter:
    """Rewrites one stream's token chunks on the text: the engine's model name becomes the requested one."""

    def __init__(self, engine_model: str, requested: str) -> None:
        self._engine = f'"model":{json.dumps(engine_model, ensure_ascii=False)}'
        self._requested = f'"model":{json.dumps(requested, ensure_ascii=False)}'

    def fast(self, payload: str) -> str | None:
        """The rewritten SSE event for an ordinary token chunk, or ``None`` when it needs the full JSON path."""
        if not payload.startswith('{"id":') or '"usage":' in payload or self._engine not in payload:
            return None
        return f"data: {payload.replace(self._engine, self._requested, 1)}\n\n"
