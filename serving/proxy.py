"""Forwarding one inference request to a chosen replica, JSON or SSE stream, with metrics.

The engine speaks OpenAI's protocol already; the proxy picks the replica, swaps our model name for the engine's
LoRA name and back, counts tokens, time to first token and latency per adapter, and turns engine failures into
domain errors (before the response starts) or an SSE error event (mid-stream).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx

from serving.adapters.registry import AdapterRegistry, Target
from serving.engine.pool import EnginePool, Replica, engine_error
from serving.errors import EngineError, GatewayError, sse_error
from serving.ops.metrics import GatewayMetrics
from serving.stream_relay import DONE, ChunkRewriter, sse_payloads

logger = logging.getLogger(__name__)


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


class EngineProxy:
    def __init__(self, pool: EnginePool, registry: AdapterRegistry, metrics: GatewayMetrics) -> None:
        self.pool = pool
        self.registry = registry
        self.metrics = metrics

    def _engine_model(self, target: Target, replica: Replica) -> str:
        return target.engine_model or replica.base_id or self.registry.base_name

    def _count_usage(self, target: Target, usage: dict[str, Any] | None) -> None:
        if usage:
            self.metrics.tokens.labels(target.label, "prompt").inc(usage.get("prompt_tokens") or 0)
            self.metrics.tokens.labels(target.label, "completion").inc(usage.get("completion_tokens") or 0)

    def _fail(self, endpoint: str, target: Target, exc: GatewayError) -> None:
        self.metrics.errors.labels(endpoint, target.label, str(exc.status_code)).inc()

    async def complete(
        self, endpoint: str, path: str, target: Target, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Non-streaming request; the engine's JSON with ``model`` set to what the client asked for."""
        self.metrics.requests.labels(endpoint, target.label, "false").inc()
        start = time.perf_counter()
        try:
            replica = self.pool.choose(target.engine_model)
            body["model"] = self._engine_model(target, replica)
            async with self.registry.use(target), self.pool.lease(replica, target.engine_model):
                try:
                    resp = await self.pool.http.post(f"{replica.url}{path}", json=body)
                except httpx.HTTPError as exc:
                    raise EngineError(f"replica {replica.index} failed: {exc!r}") from exc
            if resp.status_code != 200:
                raise engine_error(resp.status_code, resp.content, "engine")
            data: dict[str, Any] = resp.json()
        except GatewayError as exc:
            self._fail(endpoint, target, exc)
            raise
        self.metrics.latency.labels(endpoint, target.label).observe(time.perf_counter() - start)
        self._count_usage(target, data.get("usage"))
        data["model"] = target.requested
        return data

    async def open_stream(
        self,
        endpoint: str,
        path: str,
        target: Target,
        body: dict[str, Any],
        *,
        client_usage: bool,
        tail: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[str]:
        """Start a streaming request; errors before the first byte raise, later ones become an SSE error event.

        Args:
            client_usage: the client asked for ``stream_options.include_usage`` (else the usage chunk is dropped).
            tail: extra chunk fields to send as one last chunk before ``[DONE]`` (e.g. ``{"citations": ...}``).
        """
        self.metrics.requests.labels(endpoint, target.label, "true").inc()
        start = time.perf_counter()
        stack = AsyncExitStack()
        try:
            replica = self.pool.choose(target.engine_model)
            body["model"] = self._engine_model(target, replica)
            await stack.enter_async_context(self.registry.use(target))
            await stack.enter_async_context(self.pool.lease(replica, target.engine_model))
            request = self.pool.http.build_request("POST", f"{replica.url}{path}", json=body)
            try:
                resp = await self.pool.http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise EngineError(f"replica {replica.index} failed: {exc!r}") from exc
            stack.push_async_callback(resp.aclose)
            if resp.status_code != 200:
                raise engine_error(resp.status_code, await resp.aread(), "engine")
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, GatewayError):
                self._fail(endpoint, target, exc)
            raise
        rewriter = ChunkRewriter(body["model"], target.requested)
        return self._relay(endpoint, target, resp, stack, start, client_usage, tail or [], rewriter)

    async def _relay(
        self,
        endpoint: str,
        target: Target,
        resp: httpx.Response,
        stack: AsyncExitStack,
        start: float,
        client_usage: bool,
        tail: list[dict[str, Any]],
        rewriter: ChunkRewriter,
    ) -> AsyncIterator[str]:
        first_token = True
        finished = errored = False
        meta: dict[str, Any] = {}
        try:
            async for payload in sse_payloads(resp):
                if payload == DONE:
                    finished = True
                    break
                event = None if first_token else rewriter.fast(payload)
                if event is not None:  # an ordinary token chunk: only its model name changes
                    yield event
                    continue
                chunk = json.loads(payload)
                if "error" in chunk:  # the engine reported a failure mid-stream: pass it on in our shape
                    err = engine_error(int(chunk["error"].get("code") or 500), payload, "engine")
                    self._fail(endpoint, target, err)
                    yield sse_error(err)
                    finished = errored = True
                    break
                meta = meta or {k: chunk[k] for k in ("id", "object", "created") if k in chunk}
                choices = chunk.get("choices") or []
                if first_token and choices:
                    first_token = False
                    self.metrics.ttft.labels(endpoint, target.label).observe(time.perf_counter() - start)
                usage = chunk.get("usage")
                if not choices and usage:
                    self._count_usage(target, usage)
                    if not client_usage:
                        continue
                elif not client_usage:
                    chunk.pop("usage", None)
                chunk["model"] = target.requested
                yield sse(chunk)
            if not finished:
                raise httpx.RemoteProtocolError("engine closed the stream before [DONE]")
            for extra in [] if errored else tail:
                yield sse({**meta, "model": target.requested, "choices": [], **extra})
            yield "data: [DONE]\n\n"
            self.metrics.latency.labels(endpoint, target.label).observe(time.perf_counter() - start)
        except (httpx.HTTPError, ValueError) as exc:
            err = EngineError(f"engine stream failed: {exc}", code="engine_stream_error")
            self._fail(endpoint, target, err)
            logger.warning("stream failed", extra={"model": target.canonical, "error": str(exc)})
            yield sse_error(err)
            yield "data: [DONE]\n\n"
        finally:
            await stack.aclose()
