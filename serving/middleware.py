"""ASGI middleware: request ids, request-size limit, the last-resort error answer, one structured log line and the
error metric per request (no prompt text), the interactive load (:class:`ServingLoad`); and
:func:`until_disconnected`, which cancels a handler's work when its client goes away.

Pure ASGI (not ``BaseHTTPMiddleware``) so streamed responses pass through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eval import TRAFFIC_HEADER
from serving.errors import (
    CLIENT_CLOSED_REQUEST,
    GatewayError,
    PayloadTooLargeError,
    as_gateway_error,
    error_body,
)

logger = logging.getLogger("serving.access")
errors_logger = logging.getLogger("serving.errors")
T = TypeVar("T")


class ClientDisconnectedError(GatewayError):
    """The client closed the connection before the answer: the work for it was cancelled, nothing is sent."""

    status_code = CLIENT_CLOSED_REQUEST
    type = "client_closed_request"


def endpoint_label(scope: Scope) -> str:
    """The metrics label of the route a request matched (its name: ``chat``, ``create_adapter``...)."""
    route = scope.get("route")
    name = getattr(route, "name", None)
    return str(name) if name else "unmatched"


INTERACTIVE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/retrieve"})
"""Requests someone waits for: evaluation workers beside the gateway pause while any of them is in flight."""


class ServingLoad:
    """Interactive requests in flight on this gateway, and when the last one ended (``GET /load``).

    Requests marked as evaluation traffic (the ``x-ragswap-traffic: evaluation`` header every evaluation client
    sends) are not counted: a worker must not wait for its own requests.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_end: float | None = None
        """``time.monotonic()`` when the last interactive request ended (None: none yet)."""

    def idle_s(self) -> float | None:
        """Seconds since the last interactive request ended (0 while one is in flight, None: never one)."""
        if self.in_flight:
            return 0.0
        return None if self.last_end is None else time.monotonic() - self.last_end


def _interactive(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    return (
        scope.get("method") == "POST"
        and scope.get("path") in INTERACTIVE_PATHS
        and headers.get(TRAFFIC_HEADER.encode()) != b"evaluation"
    )


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, max_body: int, load: ServingLoad) -> None:
        self.app = app
        self.max_body = max_body
        self.load = load

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode(errors="replace")[:64] or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        start = time.perf_counter()
        status = {"code": 0}
        length = headers.get(b"content-length", b"")
        size = int(length) if length.isdigit() else 0

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        received = {"n": 0}

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                received["n"] += len(message.get("body", b""))
                if received["n"] > self.max_body:
                    raise _TooLarge(self.max_body)
            return message

        interactive = _interactive(scope, headers)
        if interactive:
            self.load.in_flight += 1
        try:
            if size > self.max_body:
                raise _TooLarge(self.max_body)
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception as exc:
            # Whatever no exception handler answered: a bug (500, logged with its traceback) or the body limit.
            err = as_gateway_error(exc)
            if isinstance(exc, _TooLarge):
                err = PayloadTooLargeError(str(exc.detail), code="request_too_large")
            else:
                errors_logger.exception(
                    "unhandled error", extra={"request_id": request_id, "path": scope.get("path")}
                )
            state["failed"] = True
            if status["code"]:
                return  # the response had started (a stream): the connection is cut, nothing more to say
            await _send_error(send_wrapper, err)
        finally:
            if interactive:
                self.load.in_flight -= 1
                self.load.last_end = time.monotonic()
            code = status["code"] or CLIENT_CLOSED_REQUEST
            extra: dict[str, Any] = {
                "request_id": request_id,
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": code,
                "duration_ms": round((time.perf_counter() - start) * 1000, 1),
            }
            extra.update(state.get("log_extra", {}))
            if state.get("failed") or code == CLIENT_CLOSED_REQUEST:
                _count_error(scope, state, code)
            logger.info("request", extra=extra)


def _count_error(scope: Scope, state: dict[str, Any], status: int) -> None:
    app = scope.get("app")
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    if metrics is None:  # before the lifespan built them
        return
    endpoint, model = state.get("metric_labels") or (endpoint_label(scope), "")
    metrics.errors.labels(endpoint, model, str(status)).inc()


class _TooLarge(StarletteHTTPException):
    """Raised while the body is read; FastAPI re-raises HTTPExceptions, so it renders as an OpenAI-shaped 413."""

    def __init__(self, limit: int = 0) -> None:
        super().__init__(status_code=413, detail=f"request body larger than {limit} bytes")


async def _send_error(send: Send, err: GatewayError) -> None:
    body = error_body(err)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it and raise :class:`ClientDisconnectedError`.

    For handlers that answer with one JSON body after a long wait (a non-streaming completion): cancelling the
    upstream request closes the engine connection, and vLLM's server aborts the generation when its client goes
    away. Streams need nothing: Starlette's ``StreamingResponse`` cancels its iterator on disconnect. The body
    must already be read (FastAPI parsed it), since this consumes what the client sends afterwards.
    """
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ClientDisconnectedError("the client closed the connection; the request was cancelled")
    return task.result()


def install_middleware(app: FastAPI) -> None:
    app.state.load = ServingLoad()
    app.add_middleware(
        GatewayMiddleware, max_body=app.state.settings.server.max_request_bytes, load=app.state.load
    )
