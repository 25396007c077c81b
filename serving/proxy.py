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

    def _count_request(self, endpoint: str, target: Target, stream: bool) -> None:
        self.metrics.requests.labels(endpoint, target.label, "true" if stream else "false").inc()
        if target.alias is not None:
            self.metrics.alias_requests.labels(target.alias, target.canonical).inc()

    def _count_alias_error(self, target: Target, exc: GatewayError) -> None:
        if target.alias is not None:
            self.metrics.alias_errors.labels(target.alias, target.canonical, str(exc.status_code)).inc()

    def _observe_latency(self, endpoint: str, target: Target, start: float) -> None:
        seconds = time.perf_counter() - start
        self.metrics.latency.labels(endpoint, target.label).observe(seconds)
        if target.alias is not None:
            self.metrics.alias_latency.labels(target.alias, target.canonical).observe(seconds)

    def _fail(self, endpoint: str, target: Target, exc: GatewayError) -> None:
        # Counted once, by the middleware, when the error response goes out; these are its labels.
        exc.metric_labels = (endpoint, target.label)
        self._count_alias_error(target, exc)

    def _fail_mid_stream(self, endpoint: str, target: Target, exc: GatewayError) -> None:
        # The response already started with 200: the middleware cannot see this failure.
        self.metrics.errors.labels(endpoint, target.label, str(exc.status_code)).inc()
        self._count_alias_error(target, exc)

    async def _transport_error(self, replica: Replica, since: int, exc: Exception) -> GatewayError:
        """What a broken exchange with a replica means for the client: 503 when the replica went down since the
        exchange began (``since``: its ``downs`` count then; retry shortly, another replica or its restart will
        answer), else 502."""
        if await self.pool.died(replica, since):
            if replica.downs == since:
                self.pool.mark_down(replica, "engine process exited")
            return self.pool.unavailable(f"replica {replica.index} exited while answering")
        return EngineError(f"replica {replica.index} failed: {exc!r}", code="engine_error")

    async def _send(
        self, stack: AsyncExitStack, path: str, target: Target, body: dict[str, Any], *, stream: bool
    ) -> tuple[Replica, httpx.Response, int]:
        """Send to a ready replica. One that refuses the connection is down (it died, or an external replica
        went away): it is marked so at once and the next ready replica is tried; none left → 503. Returns the
        replica, its response and its ``downs`` count when the exchange began (see :meth:`_transport_error`)."""
        while True:
            replica = self.pool.choose(target.engine_model)
            since = replica.downs
            body["model"] = self._engine_model(target, replica)
            attempt = AsyncExitStack()
            await attempt.enter_async_context(self.pool.lease(replica, target.engine_model))
            request = self.pool.http.build_request("POST", f"{replica.url}{path}", json=body)
            try:
                resp = await self.pool.http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                await attempt.aclose()
                self.pool.mark_down(replica, f"connection failed ({type(exc).__name__})")
                continue
            except httpx.HTTPError as exc:
                await attempt.aclose()
                raise await self._transport_error(replica, since, exc) from exc
            except BaseException:
                await attempt.aclose()
                raise
            stack.push_async_callback(attempt.aclose)
            if stream:
                stack.push_async_callback(resp.aclose)
            return replica, resp, since

    async def complete(
        self, endpoint: str, path: str, target: Target, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Non-streaming request; the engine's JSON with ``model`` set to what the client asked for."""
        self._count_request(endpoint, target, stream=False)
        start = time.perf_counter()
        try:
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(self.registry.use(target))
                _, resp, _ = await self._send(stack, path, target, body, stream=False)
            if resp.status_code != 200:
                raise engine_error(resp.status_code, resp.content, "engine")
            data: dict[str, Any] = resp.json()
        except GatewayError as exc:
            self._fail(endpoint, target, exc)
            raise
        self._observe_latency(endpoint, target, start)
        self._count_usage(target, data.get("usage"))
        data["model"] = target.response_model
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
            tail: extra chunk fields to send as chunks of their own before the usage chunk and ``[DONE]`` (e.g.
                ``{"citations": ...}``), so that the usage chunk stays the last one, as OpenAI sends it.
        """
        self._count_request(endpoint, target, stream=True)
        start = time.perf_counter()
        stack = AsyncExitStack()
        try:
            await stack.enter_async_context(self.registry.use(target))
            replica, resp, since = await self._send(stack, path, target, body, stream=True)
            if resp.status_code != 200:
                raise engine_error(resp.status_code, await resp.aread(), "engine")
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, GatewayError):
                self._fail(endpoint, target, exc)
            raise
        rewriter = ChunkRewriter(body["model"], target.response_model)
        return self._relay(
            endpoint, target, replica, since, resp, stack, start, client_usage, tail or [], rewriter
        )

    async def _relay(
        self,
        endpoint: str,
        target: Target,
        replica: Replica,
        since: int,
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
        usage_chunk: dict[str, Any] | None = None
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
                    self._fail_mid_stream(endpoint, target, err)
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
                    if client_usage:
                        chunk["model"] = target.response_model
                        usage_chunk = chunk  # sent last, after the tail chunks
                    continue
                if not client_usage:
                    chunk.pop("usage", None)
                chunk["model"] = target.response_model
                yield sse(chunk)
            if not finished:
                raise httpx.RemoteProtocolError("engine closed the stream before [DONE]")
            if not errored:
                for extra in tail:
                    yield sse({**meta, "model": target.response_model, "choices": [], **extra})
                if usage_chunk is not None:
                    yield sse(usage_chunk)
            yield "data: [DONE]\n\n"
            self._observe_latency(endpoint, target, start)
        except (httpx.HTTPError, ValueError) as exc:
            failure: GatewayError
            if isinstance(exc, httpx.HTTPError) and await self.pool.died(replica, since):
                failure = await self._transport_error(replica, since, exc)
            else:
                failure = EngineError(f"engine stream failed: {exc}", code="engine_stream_error")
            self._fail_mid_stream(endpoint, target, failure)
            logger.warning("stream failed", extra={"model": target.canonical, "error": str(exc)})
            yield sse_error(failure)
            yield "data: [DONE]\n\n"
        finally:
            await stack.aclose()
