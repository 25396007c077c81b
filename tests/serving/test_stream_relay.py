"""The relay's per-chunk fast path: SSE events split correctly whatever the network chunking, token chunks are
rewritten on the text exactly as the JSON path would, and every other event falls back to the JSON path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from serving.stream_relay import DONE, ChunkRewriter, sse_payloads

TOKEN = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "acme@2",
    "choices": [{"index": 0, "delta": {"content": 'say "model":"acme@2" \u00e9'}, "finish_reason": None}],
}


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


def _event(payload: str) -> bytes:
    return f"data: {payload}\n\n".encode()


@pytest.mark.parametrize("size", [1, 7, 4096])
async def test_sse_payloads_survive_any_chunking(size: int) -> None:
    body = b"".join(
        [
            _event(json.dumps(TOKEN, separators=(",", ":"), ensure_ascii=False)),
            b": keep-alive comment\n\n",
            b'data: {"a": 1}\r\n\r\n',
            _event(DONE),
        ]
    )
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    resp = httpx.Response(200, stream=_Chunks(parts))
    payloads = [p async for p in sse_payloads(resp)]
    assert [json.loads(p) for p in payloads[:2]] == [TOKEN, {"a": 1}]
    assert payloads[2:] == [DONE]


def test_rewriter_matches_the_json_path_and_declines_what_it_cannot_do() -> None:
    rewriter = ChunkRewriter("acme@2", "support")
    payload = json.dumps(TOKEN, separators=(",", ":"), ensure_ascii=False)  # vLLM's compact pydantic JSON
    event = rewriter.fast(payload)
    assert event is not None and event.startswith("data: ") and event.endswith("\n\n")
    assert json.loads(event[6:]) == {**TOKEN, "model": "support"}  # the content's look-alike is untouched
    usage = {**TOKEN, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}}
    for declined in (
        json.dumps(usage, separators=(",", ":")),  # token accounting needs the JSON
        json.dumps({"error": {"message": "boom", "code": 500}}),  # mid-stream failure
        json.dumps({**TOKEN, "model": "other"}, separators=(",", ":")),  # not the name we sent
        json.dumps(TOKEN),  # not vLLM's compact shape: the JSON path copes with anything
    ):
        assert rewriter.fast(declined) is None, declined
