"""The gateway's error taxonomy and the one place that renders every error as OpenAI's error JSON.

Services raise the domain exceptions below; they never build responses. :func:`as_gateway_error` maps anything a
request can fail with onto the taxonomy: route-level failures (unknown path → 404, undeclared method → 405 with
``Allow``), parse-level ones (invalid or non-UTF-8 JSON, a body that is not JSON → 400/415, a broken multipart
body → 400), validation errors (400 naming the field in ``param``), domain errors, and anything unexpected (500).
:func:`error_response` renders one as ``{"error": {"message", "type", "param", "code"}}``; the exception handlers
installed by :func:`install_error_handlers` and :class:`serving.middleware.GatewayMiddleware` (which catches what
no handler did, so a 500 still carries ``x-request-id``, is logged with its traceback and counted) both use it.
:func:`sse_error` renders the same shape as a server-sent event for failures in the middle of a stream.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ErrorInfo(BaseModel):
    message: str
    """What went wrong and, where it helps, what to do about it."""
    type: str
    """OpenAI's error class: ``invalid_request_error``, ``authentication_error``, ``permission_error``, ..."""
    param: str | None = None
    """The request field at fault (dotted for nested ones, e.g. ``messages.0.role``), when there is one."""
    code: str | int | None = None
    """A stable machine-readable reason, e.g. ``model_not_found``."""


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
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        self.metric_labels: tuple[str, str] | None = None
        """``(endpoint, model)`` for ``ragswap_request_errors_total`` when the raiser knows them better than the
        route (the proxy: the resolved adapter name)."""
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

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class ForbiddenError(GatewayError):
    status_code = 403
    type = "permission_error"


class NotFoundError(GatewayError):
    status_code = 404
    type = "not_found_error"


class MethodNotAllowedError(GatewayError):
    """The path exists, the method does not; ``Allow`` lists the methods it has."""

    status_code = 405
    type = "invalid_request_error"


class ConflictError(GatewayError):
    status_code = 409
    type = "conflict_error"


class PayloadTooLargeError(GatewayError):
    status_code = 413
    type = "invalid_request_error"


class UnsupportedMediaTypeError(GatewayError):
    """The body is not in a format the endpoint reads (e.g. not ``application/json``)."""

    status_code = 415
    type = "invalid_request_error"


class UnprocessableError(GatewayError):
    """Well-formed but not evaluable (retrieval's metadata filters)."""

    status_code = 422
    type = "invalid_request_error"


class EngineError(GatewayError):
    """An engine replica failed or could not be reached (not the client's fault)."""

    status_code = 502
    type = "engine_error"


class ServiceUnavailableError(GatewayError):
    """No engine replica is ready (starting, restarting, or all down): retry shortly."""

    status_code = 503
    type = "service_unavailable_error"

    def __init__(self, message: str, *, retry_after_s: int = 1, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("Retry-After", str(retry_after_s))


class InternalError(GatewayError):
    """A bug: logged with its traceback, answered without one."""

    status_code = 500
    type = "server_error"


CLIENT_CLOSED_REQUEST = 499
"""Status recorded (access log, error metric) for a request whose client went away before the answer; nothing
is sent (nginx's convention)."""


# ---- mapping anything onto the taxonomy ------------------------------------------------------------------------

_BY_STATUS: dict[int, type[GatewayError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableError,
    502: EngineError,
    503: ServiceUnavailableError,
}
_HTTP_CODES = {400: "invalid_body", 413: "request_too_large", 415: "unsupported_media_type"}
_LOC_PREFIXES = frozenset({"body", "query", "path", "header", "cookie"})
_JSON_MEDIA = ("application/json",)


def _is_union_tag(part: Any) -> bool:
    # pydantic names the union member an error came from in the location: ("stop", "list[str]", 0), or
    # ("x", "function-after[_check(), str]"); they are not fields the client sent.
    return isinstance(part, str) and (
        any(c in part for c in "[](),") or part in {"str", "int", "float", "bool"}
    )


def loc_to_param(loc: Sequence[Any]) -> str | None:
    """``("body", "messages", 0, "content")`` → ``"messages.0.content"``; ``None`` for the body as a whole."""
    parts = list(loc)
    if parts and parts[0] in _LOC_PREFIXES:
        parts = parts[1:]
    return ".".join(str(p) for p in parts if not _is_union_tag(p)) or None


def _is_json(request: Request | None) -> bool:
    if request is None:
        return True
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type in _JSON_MEDIA or content_type.endswith("+json")


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean `{close[0]}`?)" if close else ""


def validation_error(
    errors: Sequence[Any], request: Request | None = None, body_model: type[BaseModel] | None = None
) -> GatewayError:
    """One error naming the first problem of a pydantic/FastAPI validation (OpenAI answers 400, not 422).

    Args:
        errors: ``RequestValidationError.errors()`` or ``ValidationError.errors()``.
        request: the request, to tell a wrong content type (415) from a wrong JSON value (400).
        body_model: the body's model: its field names suggest the intended one for a misspelt field, and its
            ``unsupported`` class attribute (name → reason) explains fields refused on purpose.
    """
    if not errors:
        return BadRequestError("invalid request", code="invalid_request")
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    kind = str(first.get("type", "invalid_value"))
    ctx = first.get("ctx") or {}
    param = loc_to_param(loc)
    more = len(errors) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    if kind == "json_invalid":
        detail = ctx.get("error") or "invalid JSON"
        position = loc[1] if len(loc) > 1 else None
        where = f" at position {position}" if isinstance(position, int) else ""
        return BadRequestError(
            f"We could not parse the JSON body of your request: {detail}{where}", code="invalid_json"
        )
    if loc and loc[0] == "body" and param is None:
        if kind == "missing":
            return BadRequestError("the request body is missing: send a JSON object", code="missing_body")
        if kind == "value_error":  # a check across fields; by convention its message starts with "field: "
            msg = str(ctx.get("error") or first.get("msg"))
            head = msg.split(":", 1)[0]
            fields = body_model.model_fields if body_model is not None else {}
            named = head if head.split(".", 1)[0] in fields else None
            return BadRequestError(msg + suffix, param=named, code="invalid_value")
        if not _is_json(request):
            return UnsupportedMediaTypeError(
                "the request body must be JSON: send it with `Content-Type: application/json`",
                code="unsupported_media_type",
            )
        return BadRequestError(
            f"the request body must be a JSON object: {first.get('msg', 'invalid value')}",
            code="invalid_body",
        )
    if kind == "extra_forbidden":
        top_level = len(loc) == 2 and loc[0] == "body"
        name = str(loc[-1]) if loc else "?"
        unsupported: dict[str, str] = getattr(body_model, "unsupported", {}) if top_level else {}
        if name in unsupported:
            return BadRequestError(
                f"{name} is not supported by this gateway: {unsupported[name]}",
                param=param,
                code="unsupported_parameter",
            )
        known = body_model.model_fields if top_level and body_model is not None else ()
        message = f"Unrecognized request argument supplied: {param}{_suggest(name, known)}"
        return BadRequestError(message + suffix, param=param, code="unknown_parameter")
    if kind == "value_error" and ctx.get("error") is not None:
        msg = str(ctx["error"])
    else:
        msg = str(first.get("msg", "invalid value"))
    message = msg if param and msg.startswith(f"{param}:") else f"{param}: {msg}" if param else msg
    code = "missing_required_parameter" if kind == "missing" else "invalid_value"
    return BadRequestError(message + suffix, param=param, code=code)


def _body_model(request: Request | None) -> type[BaseModel] | None:
    route = request.scope.get("route") if request is not None else None
    body_field = getattr(route, "body_field", None)
    model = getattr(getattr(body_field, "field_info", None), "annotation", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _allowed_methods(request: Request | None) -> str:
    # Starlette's 405 names the methods of the first route matching the path only; a path served by several
    # routes (GET and DELETE /v1/adapters/{ref}) allows all of theirs.
    if request is None:
        return ""
    path = request.url.path
    methods: set[str] = set()
    for route in getattr(request.app, "routes", ()):
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods |= set(route_methods)
    return ", ".join(sorted(methods))


def as_gateway_error(exc: BaseException, request: Request | None = None) -> GatewayError:
    """Whatever a request failed with, as a member of the taxonomy (unknown exceptions → 500)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, RequestValidationError):
        return validation_error(exc.errors(), request, _body_model(request))
    if isinstance(exc, StarletteHTTPException):
        headers = dict(exc.headers or {})
        status = exc.status_code
        method = request.method if request is not None else ""
        path = request.url.path if request is not None else ""
        if status == 404 and exc.detail == "Not Found":
            return NotFoundError(f"Invalid URL ({method} {path})", code="unknown_url", headers=headers)
        if status == 405:
            allowed = _allowed_methods(request) or headers.get("Allow", "")
            headers["Allow"] = allowed
            return MethodNotAllowedError(
                f"{method} is not allowed on {path}; allowed: {allowed}",
                code="method_not_allowed",
                headers=headers,
            )
        cls = _BY_STATUS.get(status)
        if cls is None:
            cls = BadRequestError if 400 <= status < 500 else InternalError
            return cls(str(exc.detail), status_code=status, headers=headers)
        if status == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            return BadRequestError(
                f"We could not parse the JSON body of your request: it is not valid UTF-8 ({exc.__cause__.reason})",
                code="invalid_json",
            )
        return cls(str(exc.detail), code=_HTTP_CODES.get(status), headers=headers)
    return InternalError("internal server error", code="internal_error")


# ---- rendering -------------------------------------------------------------------------------------------------


def error_response(err: GatewayError) -> JSONResponse:
    """The one rendering of an error: status, OpenAI body, the error's headers (``Allow``, ``Retry-After``...)."""
    return JSONResponse(
        status_code=err.status_code, content=err.to_response().model_dump(), headers=err.headers or None
    )


def error_body(err: GatewayError) -> bytes:
    """The JSON body of :func:`error_response`, for ASGI code that sends it itself."""
    return json.dumps(err.to_response().model_dump()).encode()


def install_error_handlers(app: FastAPI) -> None:
    """Render every error FastAPI/Starlette route to a handler in OpenAI's shape.

    Unexpected exceptions are not handled here but in :class:`serving.middleware.GatewayMiddleware`: Starlette
    would answer them outside every middleware, without request id, access log status or error metric.
    """

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        err = as_gateway_error(exc, request)
        if err.status_code >= 500:
            logger.warning("request failed", extra={"path": request.url.path, "error": err.message})
        request.state.failed = True  # counted as a failed request by the middleware
        if err.metric_labels is not None:
            request.state.metric_labels = err.metric_labels
        return error_response(err)

    app.add_exception_handler(GatewayError, on_error)
    app.add_exception_handler(StarletteHTTPException, on_error)
    app.add_exception_handler(RequestValidationError, on_error)


def sse_error(exc: GatewayError) -> str:
    """A server-sent event carrying the error; the openai client raises ``APIError`` on it."""
    return f"data: {json.dumps(exc.to_response().model_dump())}\n\n"
