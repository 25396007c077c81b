"""The system under test, reached only through ragswap's public API (what a user of the gateway sees).

Contexts come from ``POST /v1/retrieve`` (ranked chunks with ids, for the IR and RAGAS metrics); answers and
citations from chat completions with ``extra_body={"rag": {...}}`` through the official ``openai`` client.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from eval.records import RetrievedChunk, RunConfig


class PlatformError(RuntimeError):
    """A retrieval or generation request failed; the message carries the gateway's error."""


def api_root(url: str) -> str:
    """``http://host:port`` from a URL given with or without the ``/v1`` suffix."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
    except ValueError:
        message = None
    return f"HTTP {response.status_code}: {message or response.text[:300]}"


def parse_chunks(body: Any) -> list[RetrievedChunk]:
    """Ranked chunks from a ``/v1/retrieve`` answer (``data``/``results``/``chunks`` list of hits)."""
    hits: Any = body
    if isinstance(body, dict):
        for key in ("data", "results", "chunks", "hits"):
            if isinstance(body.get(key), list):
                hits = body[key]
                break
    if not isinstance(hits, list):
        raise PlatformError("unexpected /v1/retrieve answer: no list of hits")
    chunks: list[RetrievedChunk] = []
    for rank, hit in enumerate(hits):
        if not isinstance(hit, dict):
            continue
        meta: dict[str, Any] = hit.get("metadata") or hit.get("payload") or {}
        chunk: dict[str, Any] = hit["chunk"] if isinstance(hit.get("chunk"), dict) else {}
        doc_id = hit.get("doc_id") or hit.get("document_id") or chunk.get("doc_id") or meta.get("doc_id")
        chunk_id = hit.get("id") or hit.get("chunk_id") or chunk.get("id") or f"{doc_id or 'hit'}#{rank}"
        text = hit.get("text") or chunk.get("text") or meta.get("text") or ""
        score = hit.get("score")
        chunks.append(
            RetrievedChunk(
                id=str(chunk_id),
                text=str(text),
                doc_id=str(doc_id) if doc_id is not None else None,
                score=float(score) if isinstance(score, int | float) else None,
            )
        )
    return chunks


TRAFFIC_HEADER = "x-ragswap-traffic"
"""Header every evaluation request carries (value ``evaluation``): gateways leave such requests out of the
interactive load they report on ``GET /load``, which evaluation workers yield to."""
EVALUATION_TRAFFIC = {TRAFFIC_HEADER: "evaluation"}


def openai_http_client(asgi_app: Any | None, timeout_s: float) -> Any:
    """The openai client's HTTP client: in-process to ``asgi_app`` when given (the gateway calling itself)."""
    if asgi_app is None:
        return None
    import httpx2  # what openai>=3 is built on

    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=asgi_app), timeout=timeout_s)


class PlatformClient:
    """Runs one question through the gateway for one :class:`RunConfig`.

    Example:
        >>> client = PlatformClient("http://127.0.0.1:8000", api_key="sk-...")
        >>> chunks = await client.retrieve("what is X?", config)
        >>> answer, citations = await client.answer("what is X?", config)
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        max_tokens: int = 128,
        timeout_s: float = 300.0,
        default_top_k: int = 5,
        asgi_app: Any | None = None,
    ) -> None:
        from openai import AsyncOpenAI

        self.root = api_root(url)
        self.max_tokens = max_tokens
        self.default_top_k = default_top_k
        self._headers = {**EVALUATION_TRAFFIC, **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        transport = httpx.ASGITransport(app=asgi_app) if asgi_app is not None else None
        self.http = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self.openai = AsyncOpenAI(
            base_url=f"{self.root}/v1",
            api_key=api_key or "x",
            timeout=timeout_s,
            max_retries=1,
            default_headers=EVALUATION_TRAFFIC,
            http_client=openai_http_client(asgi_app, timeout_s),
        )

    async def close(self) -> None:
        await self.http.aclose()
        await self.openai.close()

    def _rag_options(self, config: RunConfig) -> dict[str, Any]:
        options: dict[str, Any] = {
            "collection": config.collection,
            "top_k": config.top_k or self.default_top_k,
        }
        if config.retrieval_mode:
            options["mode"] = config.retrieval_mode
        if config.rerank is not None:
            options["rerank"] = config.rerank
        return options

    async def retrieve(self, question: str, config: RunConfig) -> list[RetrievedChunk]:
        """The ranked chunks retrieval returns for ``question`` (empty when the config has no collection)."""
        if not config.collection:
            return []
        body = {"query": question, **self._rag_options(config)}
        try:
            response = await self.http.post(f"{self.root}/v1/retrieve", json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise PlatformError(f"retrieve failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise PlatformError(f"retrieve failed: {_error_text(response)}")
        return parse_chunks(response.json())

    async def answer(self, question: str, config: RunConfig) -> tuple[str, list[dict[str, Any]], float]:
        """The model's answer, its citations and the request latency in seconds."""
        from openai import OpenAIError

        extra: dict[str, Any] = {"rag": self._rag_options(config)} if config.collection else {}
        start = time.perf_counter()
        try:
            completion = await self.openai.chat.completions.create(
                model=config.model,
                messages=[{"role": "user", "content": question}],
                max_tokens=self.max_tokens,
                temperature=0.0,
                extra_body=extra or None,
            )
        except OpenAIError as exc:
            raise PlatformError(f"chat completion failed: {exc}") from exc
        latency = time.perf_counter() - start
        message = completion.choices[0].message
        dumped = message.model_dump()
        citations = dumped.get("citations") or (message.model_extra or {}).get("citations") or []
        if not isinstance(citations, list):
            citations = []
        return message.content or "", [c for c in citations if isinstance(c, dict)], latency
