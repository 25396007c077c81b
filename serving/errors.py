"""Domain exceptions and the one place that renders every error as OpenAI's error JSON.

Services raise the exceptions below; they never build responses. :func:`install_error_handlers` turns them,
``HTTPException`` and request validation errors into ``{"error": {"message", "type", "param", "code"}}`` with a
4xx status for client mistakes. Anything unexpected is logged and answered with a 500 of the same shape, without
a traceback. :func:`sse_error` renders the same shape as a server-sent event for errors in the middle of a stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

logger = logging.getLogger(__name__)


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorInfo


class GatewayError(Exception):
    """Base of all domain errors: an HTTP status, an OpenAI error type, and what the client should fix."""

    status_code: int = 500
    type: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | int | None = None,
        status_code: int | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status_code is not None:
            self.status_code = status_code
        if type is not None:
            self.type = type

    def to_response(self) -> ErrorResponse:
        return ErrorResponse(
            error=ErrorInfo(message=self.message, type=self.type, param=self.param, code=self.code)
        )


class BadRequestError(GatewayError):
    status_code = 400
    type = "invalid_request_error"


class UnauthorizedError(GatewayError):
    status_code = 401
    type = "authentication_error"


class ForbiddenError(GatewayError):
    status_code = 403
    type = "permission_error"


class NotFoundError(GatewayError):
    status_code = 404
    type = "not_found_error"


class ConflictError(GatewayError):
    status_code = 409
    type = "conflict_error"


class PayloadTooLargeError(GatewayError):
    status_code = 413
    type = "invalid_request_error"


class EngineError(GatewayError):
    """An engine replica failed or could not be reached (not the client's fault)."""

    status_code = 502
    type = "engine_error"


class ServiceUnavailableError(GatewayError):
    """No engine replica is ready yet (starting, or all down)."""

    status_code = 503
    type = "service_unavailable_error"


_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_json(status_code: int, body: ErrorResponse, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status_code, content=body.model_dump(), headers=headers)


def _loc_to_param(loc: Sequence[Any]) -> str | None:
    # ("body", "messages", 0, "content") -> "messages.0.content"; the "body"/"query" prefix says nothing useful.
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def validation_error(exc: RequestValidationError) -> GatewayError:
    """A 400 naming the first invalid parameter (OpenAI answers bad parameters with 400, not 422)."""
    errors = exc.errors()
    if not errors:
        return BadRequestError("invalid request")
    first = errors[0]
    param = _loc_to_param(first.get("loc", ()))
    msg = str(first.get("msg", "invalid value"))
    message = f"{param}: {msg}" if param else msg
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return BadRequestError(message, param=param, code=str(first.get("type", "invalid_value")))


def install_error_handlers(app: FastAPI) -> None:
    """Render every error the app can produce in OpenAI's shape."""

    async def on_gateway_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        if exc.status_code >= 500:
            logger.warning("request failed", extra={"path": request.url.path, "error": exc.message})
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return error_json(exc.status_code, exc.to_response(), headers)

    async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        body = ErrorResponse(
            error=ErrorInfo(
                message=str(exc.detail), type=_HTTP_TYPES.get(exc.status_code, "server_error"), code=None
            )
        )
        return error_json(exc.status_code, body, dict(exc.headers) if exc.headers else None)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        err = validation_error(exc)
        return error_json(err.status_code, err.to_response())

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"path": request.url.path})
        body = ErrorResponse(
            error=ErrorInfo(message="internal server error", type="server_error", code="internal_error")
        )
        return error_json(500, body)

    from starlette.exceptions import HTTPException as StarletteHTTPException

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)


def sse_error(exc: GatewayError) -> str:
    """A server-sent event carrying the error; the openai client raises ``APIError`` on it."""
    return f"data: {json.dumps(exc.to_response().model_dump())}\n\n"
