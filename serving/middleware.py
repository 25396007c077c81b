"""ASGI middleware: request ids, request-size limit, one structured log line per request (no prompt text).

Pure ASGI (not ``BaseHTTPMiddleware``) so streamed responses pass through untouched.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import PayloadTooLargeError

logger = logging.getLogger("serving.access")


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode(errors="replace")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = {"code": 0}
        size = (
            int(headers.get(b"content-length", b"0") or 0)
            if headers.get(b"content-length", b"").isdigit()
            else 0
        )

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

        try:
            if size > self.max_body:
                raise _TooLarge(self.max_body)
            await self.app(scope, receive_wrapper, send_wrapper)
        except _TooLarge:
            if not status["code"]:
                await _send_too_large(send_wrapper, self.max_body)
        finally:
            extra: dict[str, Any] = {
                "request_id": request_id,
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": status["code"],
                "duration_ms": round((time.perf_counter() - start) * 1000, 1),
            }
            extra.update(scope["state"].get("log_extra", {}))
            logger.info("request", extra=extra)


class _TooLarge(HTTPException):
    """Raised while the body is read; FastAPI re-raises HTTPExceptions, so it renders as an OpenAI-shaped 413."""

    def __init__(self, limit: int = 0) -> None:
        super().__init__(status_code=413, detail=f"request body larger than {limit} bytes")


async def _send_too_large(send: Send, limit: int) -> None:
    import json

    err = PayloadTooLargeError(f"request body larger than {limit} bytes", code="request_too_large")
    body = json.dumps(err.to_response().model_dump()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_middleware(app: FastAPI) -> None:
    app.add_middleware(GatewayMiddleware, max_body=app.state.settings.server.max_request_bytes)
